from hopper.config import RoutingRule
from hopper.routing import is_ignored, route


def test_first_folder_names_the_dataset() -> None:
    assert route("sales/jan.csv", []) == "sales"
    assert route("sales/2024/01/jan.csv", []) == "sales"


def test_file_at_root_or_invalid_folder_has_no_dataset() -> None:
    assert route("jan.csv", []) is None
    assert route("Sales Data/jan.csv", []) is None


def test_rules_override_folder_routing_in_order() -> None:
    rules = [
        RoutingRule(glob="exports/*-orders.csv", dataset="orders"),
        RoutingRule(glob="exports/*.csv", dataset="misc"),
    ]
    assert route("exports/eu-orders.csv", rules) == "orders"
    assert route("exports/other.csv", rules) == "misc"
    assert route("sales/x.csv", rules) == "sales"


def test_ignore_patterns() -> None:
    patterns = [".*", "*.tmp", "*.part", "~*"]
    assert is_ignored(".hidden.csv", patterns)
    assert is_ignored("upload.csv.part", patterns)
    assert is_ignored("~lock.csv", patterns)
    assert not is_ignored("data.csv", patterns)
