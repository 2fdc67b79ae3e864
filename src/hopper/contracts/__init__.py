"""Dataset contracts: what a dataset's files must look like, and the code that holds them to it.

``model`` defines ``datasets/<name>.yaml`` (``arrow_types`` names its column types,
``yaml_io`` reads and writes the files); ``read`` decodes files of any supported format,
within the dataset's ``limits``. Holding a file to its contract: ``checks`` inspects it
(``convert`` turning its columns into their types), ``verdict`` decides whether it goes in,
``split`` sets bad rows aside (or ``rescue`` replaces bad values, keeping them as read), and
``results`` holds what they report; ``validate`` runs these steps on a whole file and
``stream`` on a large one block by block. ``transforms`` (with the ``expr`` language) shapes
valid rows before they are written; ``diff`` compares a file's columns with its contract;
``infer`` proposes a contract from a sample.
"""

from hopper.contracts.diff import ColumnDiff, ContractDiff, diff_file, format_diff
from hopper.contracts.infer import infer_contract
from hopper.contracts.model import INGEST_DATE, ColumnSpec, Contract, DerivedColumn, ReaderOptions
from hopper.contracts.read import detect_format
from hopper.contracts.results import ConformResult, Violation, format_violations
from hopper.contracts.validate import read_and_conform, validate_file
from hopper.contracts.yaml_io import dump_contract, load_contract

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
