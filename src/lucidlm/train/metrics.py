"""metrics.jsonl (one JSON object per line) and the loss curve loss.png drawn from it; beside the loss, a second
panel draws what an objective reports about its rewards (DPO's margin and accuracy, GRPO's reward and pass@1);
a run that replays supervised data draws that data's loss beside its own."""

from __future__ import annotations

import json
import os
from pathlib import Path

# the reward series drawn beside the loss, where a run has them
REWARD_SERIES = ("reward_margin", "val_reward_margin", "val_reward_accuracy", "reward", "val_pass_at_1", "kl")


class MetricsLog:
    def __init__(self, path: str | Path):
        self.path = Path(path)

    def append(self, record: dict) -> None:
        with open(self.path, "a") as f:
            f.write(json.dumps(record) + "\n")

    def read(self) -> list[dict]:
        if not self.path.exists():
            return []
        return [json.loads(line) for line in self.path.read_text().splitlines() if line.strip()]

    def truncate_after(self, step: int) -> None:
        """On resume, drop what was logged after the checkpoint, since those steps run again."""
        kept = [r for r in self.read() if r["step"] <= step]
        tmp = self.path.with_name(self.path.name + ".tmp")
        tmp.write_text("".join(json.dumps(r) + "\n" for r in kept))
        os.replace(tmp, self.path)

    def plot(self, out: str | Path) -> None:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        records = self.read()
        train = [(r["step"], r["loss"]) for r in records if "loss" in r]
        val = [(r["step"], r["val_loss"]) for r in records if "val_loss" in r]
        replay = [(r["step"], r["replay_loss"]) for r in records if "replay_loss" in r]
        rewards = [name for name in REWARD_SERIES if any(name in r for r in records)]
        figure, axes = plt.subplots(1, 2 if rewards else 1, figsize=(12 if rewards else 7, 4), dpi=100, squeeze=False)
        axis = axes[0][0]
        if train:
            label = "train loss, the replay's included" if replay else "train loss"
            axis.plot(*zip(*train, strict=True), label=label, linewidth=1, alpha=0.7)
        if val:
            axis.plot(*zip(*val, strict=True), "o-", label="val loss", linewidth=2)
        if replay:  # the replay data's cross-entropy, which the train loss includes (TrainConfig.replay_data)
            axis.plot(*zip(*replay, strict=True), label="replay loss", linewidth=1, alpha=0.7)
        axis.set_xlabel("step")
        if "reward_margin" in rewards:
            axis.set_ylabel("DPO loss")
        elif "val_pass_at_1" in rewards:
            axis.set_ylabel("policy loss; val: 1 - pass@1")
        else:
            axis.set_ylabel("cross-entropy (nats per token)")
        axis.grid(alpha=0.3)
        axis.legend()
        if rewards:
            panel = axes[0][1]
            # the KL has its own scale on the right: its spikes would flatten rewards that lie in [0, 1]
            kl_axis = panel.twinx() if "kl" in rewards else None
            for index, name in enumerate(rewards):
                points = [(r["step"], r[name]) for r in records if name in r]
                style = "o-" if name.startswith("val_") else "-"
                side = kl_axis if name == "kl" else panel
                side.plot(*zip(*points, strict=True), style, label=name.replace("_", " "), linewidth=1.5,
                          color=f"C{index}", alpha=0.5 if name == "kl" else 1.0)  # fmt: skip
            panel.set_xlabel("step")
            panel.grid(alpha=0.3)
            lines = [line for side in (panel, kl_axis) if side is not None for line in side.get_lines()]
            panel.legend(lines, [line.get_label() for line in lines])
            if kl_axis is not None:
                kl_axis.set_ylabel("KL to the reference (k3 estimate)")
                panel.set_zorder(kl_axis.get_zorder() + 1)  # the rewards drawn over the KL
                panel.patch.set_visible(False)
        figure.tight_layout()
        out = Path(out)
        tmp = out.with_name(out.stem + ".tmp.png")
        figure.savefig(tmp)
        plt.close(figure)
        os.replace(tmp, out)
