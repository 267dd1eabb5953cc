from libs.runtime import run

from .config import IngestConfig
from .service import build

if __name__ == "__main__":
    run("ingest", IngestConfig, build)
