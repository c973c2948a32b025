"""Benchmark (being written)."""


def add_arguments(parser) -> None:
    parser.add_argument("--quick", action="store_true")


def main(args) -> int:
    raise NotImplementedError
