"""The spotting model: RegNetY backbone with a per-block temporal module (ASTRM, GSM, TSM), temporal head,
classifier and the SoftIC projection head."""

from pespot.model.spotter import Spotter, build_model

__all__ = ["Spotter", "build_model"]
