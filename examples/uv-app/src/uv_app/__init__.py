"""uv-app: prints a small table of tools, using attrs and tabulate."""

import attrs
from tabulate import tabulate


@attrs.frozen
class Tool:
    name: str
    job: str


TOOLS = (
    Tool("kiln", "builds the image"),
    Tool("uv", "locks the packages"),
)


def render() -> str:
    rows = [attrs.astuple(tool) for tool in TOOLS]
    return tabulate(rows, headers=["tool", "job"], tablefmt="github")


def main() -> None:
    print(render())
