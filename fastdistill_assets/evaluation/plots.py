"""PNG plots for the eval report (matplotlib, headless)."""

from __future__ import annotations

import base64
import io

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402 - after matplotlib.use, as pyplot requires


def accuracy_plot(bars: dict[str, tuple[float, float, float]]) -> bytes:
    """Accuracy with 95 % intervals: ``{label: (value, low, high)}``."""
    labels = list(bars)
    values = [bars[k][0] for k in labels]
    errors = [[max(0.0, v - bars[k][1]) for k, v in zip(labels, values, strict=True)],  # floats: bounds can cross the value
              [max(0.0, bars[k][2] - v) for k, v in zip(labels, values, strict=True)]]
    fig, ax = plt.subplots(figsize=(6, 3.6))
    ax.bar(labels, values, yerr=errors, capsize=6, color=["#2b7bba", "#999999", "#e08a2b"][: len(labels)])
    for i, (v, label) in enumerate(zip(values, labels, strict=True)):
        ax.text(i, max(v, bars[label][2]) + 0.015, f"{v:.3f}", ha="center")
    ax.set_ylim(0, 1.08)
    ax.set_ylabel("test execution accuracy")
    ax.set_title("Student vs baseline vs teacher (95 % Wilson CI)")
    return _png(fig)


def reject_reasons_plot(counts: dict[str, int]) -> bytes:
    fig, ax = plt.subplots(figsize=(6, 3.6))
    items = sorted(counts.items(), key=lambda kv: kv[1]) or [("none", 0)]
    ax.barh([k for k, _ in items], [v for _, v in items], color="#c0504d")
    ax.set_xlabel("candidates")
    ax.set_title("Reject reasons")
    fig.tight_layout()
    return _png(fig)


def _png(fig: plt.Figure) -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100, bbox_inches="tight")
    plt.close(fig)
    return buffer.getvalue()


def markdown_image(png: bytes, alt: str) -> str:
    """``png`` inlined as a markdown image (a ``data:`` URL): the Dagster UI shows it in the metadata."""
    return f"![{alt}](data:image/png;base64,{base64.b64encode(png).decode('ascii')})"
