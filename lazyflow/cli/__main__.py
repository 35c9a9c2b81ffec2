"""``python -m lazyflow.cli``: the ``lazyflow`` command, for an environment without the
console script on its PATH."""

import sys

from lazyflow.cli import main

if __name__ == "__main__":  # importing this module (a doctest collector, say) runs nothing
    sys.exit(main())
