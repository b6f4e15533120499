"""The pieces of `make demo` (scripts/demo.py): environment, throwaway resources, processes, payments, report."""
