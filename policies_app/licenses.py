"""License classification lives with the formats (CRAN mirror filters use it too)."""

from channels_app.formats.licenses import (  # noqa: F401 - re-exported
    LICENSE_FAMILIES,
    classify,
    normalize_license,
)
