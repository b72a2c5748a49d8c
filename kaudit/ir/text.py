"""A readable listing of a lowered function (for docs, tests and debugging)."""

from __future__ import annotations

from kaudit.ir.names import render, render_call
from kaudit.ir.nodes import Assign, Branch, CallOp, Cleanup, EachVcpu, Function, Jump, LockAssert, Return


def listing(function: Function) -> str:
    temps = function.temps
    lines = [f"{function.name}({', '.join(p.name for p in function.params)})"]
    for block in function.blocks:
        loops = f"  ; in loop {', '.join(map(str, block.loops))}" if block.loops else ""
        lines.append(f"  b{block.id}:{loops}")
        for instr in block.instrs:
            if isinstance(instr, Assign):
                text = f"{render(instr.target)} = {render(instr.value, temps)}"
            elif isinstance(instr, CallOp):
                call = render_call(instr.call, temps)
                text = f"{instr.result.name} = {call}" if instr.result else call
            elif isinstance(instr, Cleanup):
                text = f"cleanup {instr.var.name} (taken by {render_call(instr.init, temps)})"
            elif isinstance(instr, LockAssert):
                text = f"assert held ({instr.mode}) {render(instr.lock)}"
            else:
                text = repr(instr)
            lines.append(f"    {instr.line}: {text}")
        term = block.term
        if isinstance(term, Jump):
            lines.append(f"    goto b{term.target}")
        elif isinstance(term, Branch):
            lines.append(f"    if ({render(term.cond, temps)}) b{term.then} else b{term.orelse}")
        elif isinstance(term, EachVcpu):
            lines.append(f"    for each vCPU {term.iterator.name}: b{term.body}, then b{term.exit}")
        elif isinstance(term, Return):
            lines.append(f"    return {render(term.value, temps)}".rstrip())
    return "\n".join(lines) + "\n"
