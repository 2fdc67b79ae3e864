"""Dataset contracts: what a dataset's files must look like, and the code that holds them to it.

``model`` defines and loads ``datasets/<name>.yaml``; ``read`` decodes files of any supported
format; ``validate`` converts and checks them; ``infer`` proposes a contract from a sample.
"""

from hopper.contracts.infer import infer_contract
from hopper.contracts.model import (
    ColumnSpec,
    Contract,
    ReaderOptions,
    dump_contract,
    load_contract,
)
from hopper.contracts.read import detect_format
from hopper.contracts.validate import (
    ConformResult,
    Violation,
    format_violations,
    read_and_conform,
    validate_file,
)

__all__ = [
    "ColumnSpec",
    "ConformResult",
    "Contract",
    "ReaderOptions",
    "Violation",
    "detect_format",
    "dump_contract",
    "format_violations",
    "infer_contract",
    "load_contract",
    "read_and_conform",
    "validate_file",
]
