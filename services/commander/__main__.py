from libs.runtime import run

from .config import CommanderConfig
from .service import build

if __name__ == "__main__":
    run("commander", CommanderConfig, build)
