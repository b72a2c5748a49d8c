"""The libclang layer: C translation units in, plain facts out.

Nothing outside this package imports clang.
"""
