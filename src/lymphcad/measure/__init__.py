"""Each finding as a radiologist reports it: a mask per detection, its RECIST size and volume, its location
(region and IASLC station or abdominal group, from landmarks found in the CT) and a calibrated probability.

Modules: :mod:`segment` (mask per detection), :mod:`recist` (size), :mod:`landmarks` and :mod:`stations`
(location), :mod:`calibration` (probability), :mod:`run` (everything for one case, the label volume and the
provenance text), :mod:`fit` (fitting a calibration from a cohort's validation fold).
"""
