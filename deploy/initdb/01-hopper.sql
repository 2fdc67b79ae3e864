-- The ledger's database beside Prefect's, and the extension Prefect's server needs.
CREATE DATABASE hopper;
\c prefect
CREATE EXTENSION IF NOT EXISTS pg_trgm;
