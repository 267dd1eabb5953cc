from libs.runtime import run

from .config import CollectorConfig
from .service import build

if __name__ == "__main__":
    run("collector", CollectorConfig, build)
