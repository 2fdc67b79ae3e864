"""Dataset contracts: what a dataset's files must look like, and the code that holds them to it.

``model`` defines and loads ``datasets/<name>.yaml``; ``read`` decodes files of any supported
format; ``validate`` converts and checks them; ``transforms`` (with the ``expr`` language)
shapes valid rows before they are written; ``diff`` compares a file's columns with its
contract; ``infer`` proposes a contract from a sample.
"""

from hopper.contracts.diff import ColumnDiff, ContractDiff, diff_file, format_diff
from hopper.contracts.infer import infer_contract
from hopper.contracts.model import (
    INGEST_DATE,
    ColumnSpec,
    Contract,
    DerivedColumn,
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
    "INGEST_DATE",
    "ColumnDiff",
    "ColumnSpec",
    "ConformResult",
    "Contract",
    "ContractDiff",
    "DerivedColumn",
    "ReaderOptions",
    "Violation",
    "detect_format",
    "diff_file",
    "dump_contract",
    "format_diff",
    "format_violations",
    "infer_contract",
    "load_contract",
    "read_and_conform",
    "validate_file",
]
