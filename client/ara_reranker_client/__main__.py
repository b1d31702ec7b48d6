import sys

from ara_reranker_client.cli import main

sys.exit(main())
