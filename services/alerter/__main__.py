"""python -m services.alerter"""

from libs.runtime import run

from .config import AlerterConfig
from .service import build

if __name__ == "__main__":
    run("alerter", AlerterConfig, build)
