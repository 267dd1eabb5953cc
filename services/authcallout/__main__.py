from libs.runtime import run

from .config import AuthCalloutConfig
from .service import build

if __name__ == "__main__":
    run("authcallout", AuthCalloutConfig, build)
