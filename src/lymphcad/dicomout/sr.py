"""Detections as a DICOM Comprehensive 3D SR: a TID 1500 Measurement Report (IHE AI Results).

One TID 1501 measurement group per finding: tracking identifier + UID, finding "Lymph node"
(SCT 59441001), the algorithm (TID 4019) and the measurements (TID 300), each INFERRED FROM the location:
the probability (DCM 122157, UCUM "1") and, when known, the mask volume (SCT 118565006, UCUM "ml") from a
SCOORD3D POINT in the CT's frame of reference (the exact centre), the sizes — diameter and, when known, short and long axis (SCT 81827009 / 103340004 /
103339001, UCUM "mm"), measured in the axial plane — from a 2D SCOORD POINT on the nearest source slice
(what OHIF and Slicer display). Why not one ROI group with both points: a TID 1410/1411 image region is
either 2D or 3D, those templates forbid coordinates on measurements, and TID 320 allows only one of
IMAGE/SCOORD/SCOORD3D per measurement (PixelMed checks this).
The document is a machine result: CompletionFlag PARTIAL, VerificationFlag UNVERIFIED.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import highdicom as hd
import numpy as np
from pydicom.dataset import Dataset
from pydicom.sr.codedict import codes
from pydicom.sr.coding import Code

from lymphcad.dicomout.findings import AlgorithmInfo, Finding
from lymphcad.dicomout.source import SourceSeries

LYMPH_NODE = Code("59441001", "SCT", "Lymph node")
PROBABILITY = Code("122157", "DCM", "Probability")
DIAMETER = Code("81827009", "SCT", "Diameter")
SHORT_AXIS = Code("103340004", "SCT", "Short Axis")
LONG_AXIS = Code("103339001", "SCT", "Long Axis")
VOLUME = Code("118565006", "SCT", "Volume")
ML = Code("ml", "UCUM", "milliliter")
MM = Code("mm", "UCUM", "millimeter")
NO_UNITS = Code("1", "UCUM", "no units")

#: Series number given to the SR (the SEG takes the next one); arbitrary but stable.
SR_SERIES_NUMBER = 9901


@dataclass(frozen=True)
class SRFinding:
    """A finding as read back from an SR (for checks): tracking identity, points and measurements."""

    tracking_id: str
    tracking_uid: str
    point_xyz: tuple[float, float, float]
    image_point_colrow: tuple[float, float] | None  # None when the finding has no size measurement
    image_sop_instance_uid: str | None
    measurements: dict[str, float]


def _algorithm(info: AlgorithmInfo) -> hd.sr.AlgorithmIdentification:
    return hd.sr.AlgorithmIdentification(
        name=info.name,
        version=info.version,
        parameters=[f"{k}={v}" for k, v in info.parameters.items()],
    )


def _measurements(
    finding: Finding,
    point_2d: hd.sr.CoordinatesForMeasurement,
    point_3d: hd.sr.CoordinatesForMeasurement3D,
) -> list[hd.sr.Measurement]:
    out = [
        hd.sr.Measurement(
            name=PROBABILITY,
            value=finding.probability,
            unit=NO_UNITS,
            referenced_coordinates=[point_3d],
        )
    ]
    if finding.volume_ml is not None:  # measured on the 3D mask: anchored at the 3D point
        out.append(
            hd.sr.Measurement(
                name=VOLUME, value=finding.volume_ml, unit=ML, referenced_coordinates=[point_3d]
            )
        )
    for code, mm in (
        (DIAMETER, finding.diameter_mm),
        (SHORT_AXIS, finding.short_axis_mm),
        (LONG_AXIS, finding.long_axis_mm),
    ):
        if mm is not None:
            out.append(hd.sr.Measurement(name=code, value=mm, unit=MM, referenced_coordinates=[point_2d]))
    return out


def _group(
    finding: Finding, source: SourceSeries, algorithm: hd.sr.AlgorithmIdentification
) -> hd.sr.MeasurementsAndQualitativeEvaluations:
    index, colrow, _ = source.nearest_slice(finding.center_xyz)
    ref = source.slices[index].dataset
    # SCOORD pixel coordinates: (0, 0) is the outer corner of the first pixel, its centre is (0.5, 0.5).
    point_2d = hd.sr.CoordinatesForMeasurement(
        graphic_type=hd.sr.GraphicTypeValues.POINT,
        graphic_data=np.array([[colrow[0] + 0.5, colrow[1] + 0.5]], dtype=np.float64),
        source_image=hd.sr.SourceImageForRegion(
            referenced_sop_class_uid=ref.SOPClassUID, referenced_sop_instance_uid=ref.SOPInstanceUID
        ),
    )
    point_3d = hd.sr.CoordinatesForMeasurement3D(
        graphic_type=hd.sr.GraphicTypeValues3D.POINT,
        graphic_data=np.array([finding.center_xyz], dtype=np.float64),
        frame_of_reference_uid=source.frame_of_reference_uid,
    )
    return hd.sr.MeasurementsAndQualitativeEvaluations(
        tracking_identifier=hd.sr.TrackingIdentifier(
            uid=finding.tracking_uid, identifier=finding.tracking_id
        ),
        finding_type=LYMPH_NODE,
        algorithm_id=algorithm,
        measurements=_measurements(finding, point_2d, point_3d),
    )


#: TID 1500 row 10 "Qualitative Evaluations" and what an empty result says in it.
QUALITATIVE_EVALUATIONS = Code("C0034375", "UMLS", "Qualitative Evaluations")
FINDING = Code("121071", "DCM", "Finding")
NO_FINDING = Code("373572006", "SCT", "Clinical finding absent")


def _placeholder(source: SourceSeries) -> Finding:
    centre = source.slices[0].plane.index_to_world(np.zeros(3))
    return Finding("placeholder", hd.UID(), (float(centre[0]), float(centre[1]), float(centre[2])), 0.0)


def _replace_with_no_findings(root: Dataset) -> None:
    """Swap the Imaging Measurements container (TID 1500 row 6) for a Qualitative Evaluations container
    (row 10) saying "Finding: clinical finding absent": a valid report of an empty result."""
    evaluations = hd.sr.ContainerContentItem(
        name=QUALITATIVE_EVALUATIONS, relationship_type=hd.sr.RelationshipTypeValues.CONTAINS
    )
    evaluations.ContentSequence = hd.sr.ContentSequence(
        [
            hd.sr.CodeContentItem(
                name=FINDING, value=NO_FINDING, relationship_type=hd.sr.RelationshipTypeValues.CONTAINS
            )
        ]
    )
    items = root.ContentSequence
    last = items[-1].ConceptNameCodeSequence[0]
    assert last.CodeValue == codes.DCM.ImagingMeasurements.value  # highdicom appends it last
    del items[-1]  # (ContentSequence.__setitem__ treats a Dataset as an iterable of items)
    items.append(evaluations)


def build_sr(
    source: SourceSeries,
    findings: Sequence[Finding],
    algorithm: AlgorithmInfo,
    *,
    series_uid: str | None = None,
    sop_instance_uid: str | None = None,
) -> hd.sr.Comprehensive3DSR:
    """The Measurement Report for ``findings`` on ``source`` (no findings → a valid report without groups).

    Patient and study modules come from the source headers; series and instance UIDs are new.
    """
    algo = _algorithm(algorithm)
    device = hd.sr.DeviceObserverIdentifyingAttributes(
        uid=hd.UID(),
        name=algorithm.name,
        manufacturer_name="lymphcad",
        model_name=algorithm.model_name[:64],
    )
    context = hd.sr.ObservationContext(
        observer_device_context=hd.sr.ObserverContext(
            observer_type=codes.DCM.Device, observer_identifying_attributes=device
        )
    )
    groups = [_group(f, source, algo) for f in findings]
    # the image library (TID 1600) lists the slices the SCOORD points are on; every slice of the series
    # is referenced as evidence (CurrentRequestedProcedureEvidenceSequence)
    on_slices = sorted({source.nearest_slice(f.center_xyz)[0] for f in findings})
    report = hd.sr.MeasurementReport(
        observation_context=context,
        procedure_reported=codes.LN.CTUnspecifiedBodyRegion,
        # highdicom requires a group; with no finding one is built and replaced below
        imaging_measurements=groups or [_group(_placeholder(source), source, algo)],
        referenced_images=[source.slices[n].dataset for n in on_slices] or None,
    )
    if not groups:
        _replace_with_no_findings(report[0])
    return hd.sr.Comprehensive3DSR(
        evidence=source.datasets,
        content=report[0],
        series_instance_uid=series_uid or hd.UID(),
        series_number=SR_SERIES_NUMBER,
        sop_instance_uid=sop_instance_uid or hd.UID(),
        instance_number=1,
        manufacturer="lymphcad",
        is_complete=False,
        is_final=False,
        is_verified=False,
        series_description="lymphcad lymph node detections (unverified)",
    )


def read_sr_findings(sr: Dataset) -> list[SRFinding]:
    """The findings of an SR written by :func:`build_sr`, read with highdicom (for checks and tests)."""
    doc = hd.sr.Comprehensive3DSR.from_dataset(sr)
    report = doc.content
    if not isinstance(report, hd.sr.MeasurementReport):
        raise ValueError("the SR is not a TID 1500 Measurement Report")
    out: list[SRFinding] = []
    for group in report.get_image_measurement_groups():
        measurements: dict[str, float] = {}
        point: tuple[float, float, float] | None = None
        colrow: tuple[float, float] | None = None
        image_uid: str | None = None
        for m in group.get_measurements():
            measurements[str(m.name.meaning)] = float(m.value)
            for coord in m.referenced_coordinates or []:
                data = np.asarray(coord.value, dtype=np.float64).reshape(-1)
                if coord.value_type == hd.sr.ValueTypeValues.SCOORD3D:
                    point = (float(data[0]), float(data[1]), float(data[2]))
                else:
                    colrow = (float(data[0]), float(data[1]))
                    image_uid = str(
                        coord.ContentSequence[0].ReferencedSOPSequence[0].ReferencedSOPInstanceUID
                    )
        if point is None:
            raise ValueError(f"measurement group {group.tracking_identifier} lacks its SCOORD3D point")
        out.append(
            SRFinding(
                tracking_id=str(group.tracking_identifier),
                tracking_uid=str(group.tracking_uid),
                point_xyz=point,
                image_point_colrow=colrow,
                image_sop_instance_uid=image_uid,
                measurements=measurements,
            )
        )
    return out
