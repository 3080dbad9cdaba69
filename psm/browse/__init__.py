"""The package browser at `/`: the channels a visitor may read, their packages, and how to
install each one. Here in `psm` because "why is X not here?" asks the mirrors (mirrors_app),
which channels_app may not import."""
