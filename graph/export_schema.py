"""`python -m graph.export_schema > schema.graphql`: the schema as clients see it."""

from .schema import export_sdl

if __name__ == "__main__":
    print(export_sdl(), end="")
