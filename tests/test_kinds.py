"""The failure kinds the daemon records are the ones the wire API lists, and no others."""

from __future__ import annotations

from pathlib import Path

from clipd.errors import ImageError
from clipd_api import kinds


def every_subclass(cls: type[ImageError]) -> list[type[ImageError]]:
    found = [cls]
    for direct in cls.__subclasses__():
        found += every_subclass(direct)
    return found


def test_every_image_error_names_a_listed_failure_kind() -> None:
    for error in every_subclass(ImageError):
        assert error.error_class in kinds.FAILURE_KINDS, error


def test_the_proto_names_every_failure_kind() -> None:
    proto = Path(kinds.__file__).parent / "v1" / "clipd.proto"
    comments = proto.read_text(encoding="utf-8")
    for kind in kinds.FAILURE_KINDS:
        assert f'"{kind}"' in comments, kind
    for kind in kinds.ErrorKind:
        assert f'"{kind.value}"' in comments, kind
