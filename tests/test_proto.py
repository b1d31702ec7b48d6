"""Generated code stays generated: the committed stubs must equal what `make proto` makes now."""

from tools.protogen import stale_files


def test_generated_stubs_are_up_to_date():
    assert stale_files() == [], "run `make proto` and commit the result"
