"""server: the FastAPI service (``stream4d serve``).

Sessions with per-session bearer tokens; video uploads, live WebSocket frames
or pulled streams in; reconstruction jobs on a worker pool; progress events and
result files out. Metadata lives in SQLite under the data directory.
"""

from server.app import create_app
from server.settings import Settings

__all__ = ["create_app", "Settings"]
