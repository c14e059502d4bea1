"""Benchmark: what reading the CT over DICOMweb (a local Orthanc) adds to ``detect`` on a 300-slice series.

The series: the 100 real slices of ../shared/data/real-ct/cmb-crc/MSB-01068-chest (GE LightSpeed VCT,
512×512, contrast chest; TCIA CMB-CRC, CC BY 4.0) written three times one above the other (new positions
and SOP Instance UIDs, same pixels) = 300 slices, 150 MiB, uploaded to a real Orthanc with the DICOMweb
plugin (started like the tests start it).

Measured:

* ``dicomweb_overhead_s``: the work ``detect --dicomweb`` does before detection and a local ``detect``
  does not — QIDO series choice + WADO-RS retrieval of every instance into a temporary folder — best of
  ``--repeats`` (target: ≤ 2 s);
* ``local_read_s``: reading the same series from a local folder (the reference, same run), best of repeats;
* with ``--detect``: one full ``lymphcad detect`` from the folder and one over DICOMweb (wall seconds, and
  whether both give the same detections).

    python benchmarks/bench_dicomweb.py [--repeats 3] [--detect]

Writes benchmarks/results/dicomweb.json and prints the figures.
"""

from __future__ import annotations

import argparse
import csv
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import pydicom
from pydicom.uid import generate_uid

from lymphcad import atomic
from lymphcad.io.reader import read_ct
from lymphcad.pacs.client import Pacs

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))
from orthanc_server import orthanc, upload  # noqa: E402  (the tests' Orthanc launcher)

SOURCE = Path("data/real-ct/cmb-crc/MSB-01068-chest")


def make_series(shared: Path, out: Path, copies: int = 3) -> list[Path]:
    """The 100 real slices stacked ``copies`` times along z as one series (new UIDs and positions)."""
    files = sorted((shared / SOURCE).glob("*.dcm"))
    first = [pydicom.dcmread(f) for f in files]
    zs = sorted(float(ds.ImagePositionPatient[2]) for ds in first)
    span = zs[-1] - zs[0] + (zs[1] - zs[0])
    study, series, frame = generate_uid(), generate_uid(), generate_uid()
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for c in range(copies):
        for n, ds in enumerate(first):
            ds = pydicom.dcmread(files[n])
            ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.FrameOfReferenceUID = study, series, frame
            ds.SOPInstanceUID = generate_uid()
            ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
            ipp = [float(v) for v in ds.ImagePositionPatient]
            ds.ImagePositionPatient = [ipp[0], ipp[1], ipp[2] - c * span]
            ds.InstanceNumber = c * len(first) + n + 1
            path = out / f"{c:02d}-{n:04d}.dcm"
            ds.save_as(path, enforce_file_format=True)
            written.append(path)
    return written


def best(times: list[float]) -> float:
    return min(times)


def run_detect(args: list[str], out: Path) -> tuple[float, list[tuple[str, ...]]]:
    env = {**os.environ, "PYTHONPATH": str(HERE.parent / "src"), "LYMPHCAD_NO_PROGRESS": "1"}
    t = time.perf_counter()
    subprocess.run(
        [sys.executable, "-m", "lymphcad", "detect", *args, "--out", str(out)], check=True, env=env
    )
    seconds = time.perf_counter() - t
    with out.open() as fh:
        rows = [tuple(r[1:]) for r in csv.reader(fh)][1:]  # without the case id (the folder/series name)
    return seconds, rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--detect", action="store_true", help="also time one full detect each way")
    parser.add_argument(
        "--shared", type=Path, default=Path(os.environ.get("LYMPHCAD_SHARED", HERE.parent.parent / "shared"))
    )
    args = parser.parse_args()
    if not (args.shared / SOURCE).is_dir():
        raise SystemExit(f"needs the real series {args.shared / SOURCE} (set LYMPHCAD_SHARED)")
    result: dict[str, Any] = {"benchmark": "dicomweb", "machine": platform.node(), "cpus": os.cpu_count()}
    with tempfile.TemporaryDirectory(prefix="bench-dicomweb-") as tmp_s:
        tmp = Path(tmp_s)
        files = make_series(args.shared, tmp / "series")
        total_bytes = sum(f.stat().st_size for f in files)
        study = str(pydicom.dcmread(files[0], stop_before_pixels=True).StudyInstanceUID)
        with orthanc(tmp / "orthanc") as server:
            upload(server, files)
            pacs = Pacs(server.dicomweb)
            load = [os.getloadavg()[0]]
            web: list[float] = []
            local: list[float] = []
            for r in range(args.repeats):
                t = time.perf_counter()
                choice = pacs.choose_series(study)
                n = pacs.retrieve_series(study, choice, tmp / f"dl{r}")
                web.append(time.perf_counter() - t)
                assert n == len(files)
                t = time.perf_counter()
                vol = read_ct(tmp / "series")
                local.append(time.perf_counter() - t)
                load.append(os.getloadavg()[0])
            result.update(
                series={"slices": len(files), "bytes": total_bytes, "shape_zyx": list(vol.array.shape)},
                dicomweb_overhead_s=best(web),
                dicomweb_overhead_all_s=web,
                local_read_s=best(local),
                local_read_all_s=local,
                overhead_target_s=2.0,
                overhead_ok=best(web) <= 2.0,
                load_average_1min_during=load,
            )
            if args.detect:
                t_local, rows_local = run_detect([str(tmp / "series"), "--threads", "2"], tmp / "local.csv")
                t_web, rows_web = run_detect(
                    ["--dicomweb", server.dicomweb, "--study", study, "--threads", "2"], tmp / "web.csv"
                )
                result["detect"] = {
                    "local_wall_s": t_local,
                    "dicomweb_wall_s": t_web,
                    "difference_s": t_web - t_local,
                    "detections": len(rows_local),
                    "same_detections": rows_local == rows_web,
                }
    target = HERE / "results" / "dicomweb.json"
    atomic.write_json(target, result)
    print(
        f"300-slice series ({total_bytes / 2**20:.0f} MiB): DICOMweb choice + WADO-RS retrieval "
        f"{result['dicomweb_overhead_s']:.2f} s (target ≤ 2 s), local read {result['local_read_s']:.2f} s; "
        f"load {max(load):.1f}"
    )
    if "detect" in result:
        d = result["detect"]
        print(
            f"detect: local {d['local_wall_s']:.1f} s, over DICOMweb {d['dicomweb_wall_s']:.1f} s "
            f"(+{d['difference_s']:.1f} s), same detections: {d['same_detections']}"
        )
    print(f"→ {target}")


if __name__ == "__main__":
    main()
