import pytest
from align_scenes import PlaneScene, make_plane_scene

from align.synthetic import render_layered_room


@pytest.fixture(scope="session")
def plane_scene() -> PlaneScene:
    return make_plane_scene(16)


@pytest.fixture(scope="module")
def room():
    """A sideways walk through the textured room at 256 x 192, exact depth and poses."""
    return render_layered_room("sideways", 20, 256, 192, seed=3)
