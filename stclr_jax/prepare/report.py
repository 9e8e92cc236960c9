"""What a ``prepare`` run reports: its summary text and its tables
(``manifest.csv``, ``videos.csv``, ``skipped.csv``)."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Sequence

from stclr_jax import manifest

KINDS = ("corrupt", "no_face", "too_short", "error")  # why a video skipped
SKIPPED_COLUMNS = ("path", "kind", "reason")


@dataclasses.dataclass
class Summary:
  """The records of a run (one per input, in input order)."""

  records: list[dict]
  reused: int  # records taken over from an earlier run
  ignored: list[str]  # files under --input that are neither video nor frame
  output: str

  @property
  def prepared(self) -> list[dict]:
    return [r for r in self.records if r["status"] == "prepared"]

  @property
  def skipped(self) -> list[dict]:
    return [r for r in self.records if r["status"] != "prepared"]

  def text(self) -> str:
    p, s = self.prepared, self.skipped
    tot = lambda k, rs=p: sum(r.get(k, 0) for r in rs)  # noqa: E731
    lines = [
      f"prepare: {len(self.records)} videos -> {self.output}",
      f"  prepared {len(p)} ({self.reused} reused from an earlier run): "
      f"{tot('frames_kept')} of {tot('frames_in')} frames kept; "
      f"{tot('gaps_bridged')} face-less gaps bridged "
      f"({tot('frames_bridged')} frames); {tot('segments_cut')} face-less "
      f"segments cut ({tot('frames_cut')} frames)",
    ]
    kinds = {k: sum(r["kind"] == k for r in s) for k in KINDS}
    by_kind = ", ".join(f"{k} {n}" for k, n in kinds.items() if n)
    lines.append(
      f"  skipped {len(s)}" + (f": {by_kind} (see skipped.csv)" if s else "")
    )
    for r in s:
      lines.append(f"    {r['source']}: {r['kind']}: {r['reason']}")
    if self.ignored:
      shown = ", ".join(self.ignored[:5])
      more = (
        f" and {len(self.ignored) - 5} more" if len(self.ignored) > 5 else ""
      )
      lines.append(
        f"  ignored {len(self.ignored)} files that are neither "
        f"videos nor frames: {shown}{more}"
      )
    if self.records and not any(r["label"] for r in self.records):
      lines.append(
        "  no labels: an unlabelled data set, for pretraining (evaluation "
        "needs labelled videos)"
      )
    lines.append(
      f"  manifest: {os.path.join(self.output, 'manifest.csv')}; "
      "train with --config.data.name=video_folder "
      "--config.data.csv_path="
      f"{os.path.join(self.output, 'videos.csv')}"
    )
    return "\n".join(lines)


def write_tables(output: str, records: Sequence[dict]) -> None:
  """``manifest.csv`` (:data:`stclr_jax.manifest.PREPARED_COLUMNS`) and
  ``videos.csv`` (:data:`stclr_jax.manifest.COLUMNS`) of the prepared
  clips, ``skipped.csv`` of the rest."""
  done = [r for r in records if r["status"] == "prepared"]
  manifest.write(
    os.path.join(output, "manifest.csv"),
    manifest.PREPARED_COLUMNS,
    [
      [
        r["path"],
        r["label"],
        r["subject"],
        r["frames_in"],
        r["frames_kept"],
        "" if r["fps"] is None else f"{r['fps']:g}",
      ]
      for r in done
    ],
  )
  manifest.write(
    os.path.join(output, "videos.csv"),
    manifest.COLUMNS,
    [[r["path"], r["label"], r["subject"], r["group"]] for r in done],
  )
  manifest.write(
    os.path.join(output, "skipped.csv"),
    SKIPPED_COLUMNS,
    [
      [r["source"], r["kind"], r["reason"]]
      for r in records
      if r["status"] != "prepared"
    ],
  )
