"""Facts code generation needs about an IR function: users, program positions, fusion, liveness."""
from __future__ import annotations

from collections import defaultdict

from .. import ir
from ..prims import PRIMS

_BARRIERS = {"store", "add_at", "for", "while", "if", "fork"}
MATVEC_GROUP_MAX = 4                 # products sharing one pass over their matrix
_FUSABLE_USERS = {"reduce_sum", "reduce_prod", "reduce_max", "reduce_min", "index", "slice",
                  "transpose", "store", "add_at", "return", "yield", "matmul"}


class Analysis:
    def __init__(self, fn: ir.Function):
        self.users = defaultdict(list)     # Value -> [Op]
        self.pos = {}                      # Op -> pre-order position
        self.block_of = {}                 # Op -> Block
        self.value_block = {}              # Value -> Block defining it
        for p in fn.params:
            self.value_block[p] = fn.body
        self._walk(fn.body)
        self.products = sum(op.prim == "matmul" for op in self.pos)   # matrix products, anywhere
        self._fused = {}
        self.reduce_group = {}             # full reduction -> its group (ops, in order)
        self._group_reductions(fn.body)
        self.matvec_group = {}             # matrix @ vector -> the products sharing its matrix
        self._group_matvecs(fn.body)

    def _walk(self, block: ir.Block):
        for a in block.args:
            self.value_block[a] = block
        for op in block.ops:
            self.pos[op] = len(self.pos)
            self.block_of[op] = block
            for o in op.operands:
                self.users[o].append(op)
            for r in op.results:
                self.value_block[r] = block
            for reg in op.regions:
                self._walk(reg)

    def _group_reductions(self, block: ir.Block):
        """Horizontal fusion: full reductions of one shape in a block, with no store or control
        flow between them and no use of an earlier one's result before the last, run in one loop
        (emitted where the last one stands)."""
        group = []
        for op in block.ops:
            for r in op.regions:
                self._group_reductions(r)
            if op.prim in _BARRIERS and group:
                self._close_group(group)
                group = []
            if not (op.prim.startswith("reduce_") and op.result.type.is_scalar):
                continue
            shape = op.operands[0].type.shape
            ok = bool(group) and group[0].operands[0].type.shape == shape and all(
                all(self.pos[u] > self.pos[op] for u in self.users.get(m.result, [])) for m in group)
            if not ok:
                self._close_group(group)
                group = []
            group.append(op)
        self._close_group(group)

    def _group_matvecs(self, block: ir.Block):
        """Horizontal fusion of matrix-vector products with one matrix operand in a block (a JVP's
        A @ x and A @ dx): they run in one pass over the matrix, emitted where the first stands,
        so every later member's vector must already be defined there."""
        by_matrix = defaultdict(list)
        for op in block.ops:
            for r in op.regions:
                self._group_matvecs(r)
            if (op.prim == "matmul" and not op.attrs.get("batch") and op.operands[0].type.rank == 2
                    and op.operands[1].type.rank == 1 and op.operands[0] is not op.operands[1]):
                by_matrix[op.operands[0]].append(op)
        for ops in by_matrix.values():
            first = ops[0]
            members = [first] + [o for o in ops[1:] if self._defined_before(o.operands[1], first)
                                 and o.operands[1].type == first.operands[1].type]
            for k in range(0, len(members), MATVEC_GROUP_MAX):
                chunk = tuple(members[k:k + MATVEC_GROUP_MAX])
                if len(chunk) > 1:
                    for m in chunk:
                        self.matvec_group[m] = chunk

    def _defined_before(self, v: ir.Value, op: ir.Op) -> bool:
        """v is usable where op stands (defined in an enclosing block, or earlier in op's)."""
        if self.value_block.get(v) is not self.block_of[op]:
            return True                     # SSA scoping: from an enclosing block
        owner = v.owner
        return not isinstance(owner, ir.Op) or self.pos[owner] < self.pos[op]

    def _close_group(self, group):
        if len(group) > 1:
            members = tuple(group)
            for m in group:
                self.reduce_group[m] = members

    def fused(self, v: ir.Value) -> bool:
        """Whether v (an elementwise or view result) is evaluated inside its single user."""
        if v in self._fused:
            return self._fused[v]
        self._fused[v] = ok = self._can_fuse(v)
        return ok

    def _can_fuse(self, v: ir.Value) -> bool:
        """Fusable: every user (extent queries aside) is a fusable consumer in the same block with
        no store or control flow in between, and all of them end up evaluated in one loop (a DAG
        of elementwise ops is fused; code generation computes each node once per element)."""
        op = v.owner
        if not isinstance(op, ir.Op) or v.type.is_scalar:
            return False
        us = [u for u in self.users.get(v, []) if u.prim != "dim"]
        if not us:
            return True                 # only its extents are used: never evaluated
        block = self.block_of[op]
        i = block.ops.index(op)
        for user in us:
            if self.block_of.get(user) is not block:
                return False
            kind = PRIMS[user.prim].kind if user.prim in PRIMS else None
            if kind == "elementwise":
                if user.result.type.shape != v.type.shape:
                    return False        # broadcasting would re-evaluate it per repeated element
            elif user.prim not in _FUSABLE_USERS:
                return False
            if user.prim in ("store", "add_at") and user.operands[0] is v:
                return False
            j = block.ops.index(user)
            if any(o.prim in _BARRIERS for o in block.ops[i + 1:j]):
                return False
        if len(us) == 1 and sum(o is v for o in us[0].operands) == 1:
            return True
        sinks = {self._group_last(self._sink(u)) for u in us}
        return len(sinks) == 1 and all(PRIMS[u.prim].kind == "elementwise" or u.prim.startswith("reduce_")
                                       for u in us if u.prim in PRIMS)

    def _group_last(self, op: ir.Op):
        g = self.reduce_group.get(op)
        return g[-1] if g else op

    def _sink(self, op: ir.Op):
        """The op whose loop evaluates `op`'s operands: op itself unless it is fused further."""
        while op.results and len(op.results) == 1 and not op.result.type.is_scalar \
                and op.prim in PRIMS and PRIMS[op.prim].kind in ("elementwise", "view") and self.fused(op.result):
            us = [u for u in self.users.get(op.result, []) if u.prim != "dim"]
            if not us:
                return op
            op = self._sink(us[0]) if len(us) > 1 else us[0]
        return op

    def dead_after(self, x: ir.Value, op: ir.Op) -> bool:
        """x is defined in op's block and no op after `op` uses it."""
        if self.value_block.get(x) is not self.block_of.get(op):
            return False
        p = self.pos[op]
        uses = [u for u in self.users.get(x, []) if u is not op]
        return all(self.pos[u] < p for u in uses) and sum(o is x for o in op.operands) == 1
