import hopper


def test_public_api_is_pinned() -> None:
    assert sorted(hopper.__all__) == sorted(
        [
            "ConfigError",
            "ContractViolation",
            "FileRef",
            "FileState",
            "HopperError",
            "IngestOutcome",
            "IngestRequest",
            "SourceGoneError",
            "TerminalError",
            "TransientError",
            "UnknownDatasetError",
            "UnreadableFileError",
            "__version__",
        ]
    )
    for name in hopper.__all__:
        assert hasattr(hopper, name)
