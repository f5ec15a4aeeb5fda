"""Chat: how a conversation becomes the text a model continues (template.py)."""

from lucidlm.chat.template import chat_prompt, render_template

__all__ = ["chat_prompt", "render_template"]
