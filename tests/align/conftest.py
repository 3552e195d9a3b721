import pytest
from align_scenes import PlaneScene, make_plane_scene


@pytest.fixture(scope="session")
def plane_scene() -> PlaneScene:
    return make_plane_scene(16)
