from libs.runtime import run

from .config import ReplicatorConfig
from .service import build

if __name__ == "__main__":
    run("replicator", ReplicatorConfig, build)
