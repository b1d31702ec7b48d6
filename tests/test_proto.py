"""Generated code stays generated: the committed stubs must equal what `make proto` makes now."""

import pytest

from tools.protogen import stale_files

pytestmark = pytest.mark.unit  # starts no process: make test-unit


def test_generated_stubs_are_up_to_date():
    assert stale_files() == [], "run `make proto` and commit the result"
