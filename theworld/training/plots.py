"""Loss and accuracy curves as PNG files."""

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def plot_curves(history: dict[str, list], output_dir: Path) -> list[Path]:
    """Writes `loss.png` (training loss per step), if evaluated `accuracy.png` (dev accuracy per step), and after a
    describe stage `describe.png` (its loss per step)."""
    written = []
    curves = [
        ("loss.png", "loss", "training loss"),
        ("accuracy.png", "dev_accuracy", "dev accuracy"),
        ("describe.png", "describe_loss", "describe-stage loss"),
    ]
    for file_name, key, label in curves:
        points = history.get(key) or []
        if not points:
            continue
        steps, values = zip(*points, strict=True)
        figure, axes = plt.subplots(figsize=(6, 4))
        axes.plot(steps, values, marker="o" if len(points) < 30 else None)
        axes.set_xlabel("optimizer step")
        axes.set_ylabel(label)
        if key == "dev_accuracy":
            axes.set_ylim(0, 1)
            axes.axhline(0.5, color="grey", linestyle="--", linewidth=1, label="chance")
            axes.legend()
        axes.grid(alpha=0.3)
        figure.tight_layout()
        path = output_dir / file_name
        figure.savefig(path, dpi=100)
        plt.close(figure)
        written.append(path)
    return written
