# The live tiny-model server of the serve tests, for the abuse and soak tests.
from ..serve.conftest import model, process_server, server, tokenizer  # noqa: F401
