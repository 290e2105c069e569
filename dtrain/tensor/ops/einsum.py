"""einsum: any equation torch.einsum accepts, contracted pairwise through matmul.

Built from differentiable ops (diagonal, sum, permute, reshape, matmul), so the gradient
of each operand is the same contraction of the others and needs no backward of its own.
"""
from ..tensor import Tensor
from .autocast import autocast_call, open_regions, thread_state
from .diag import Diagonal
from .linalg import matmul
from .shape import permute


def _parse(equation, operands):
    """Per operand a list of labels (ints: a letter's code, or -k for the k-th dim of the
    ellipsis counted from the right), and the output's labels."""
    eq = equation.replace(" ", "")
    lhs, arrow, rhs = eq.partition("->")
    terms = lhs.split(",")
    if len(terms) != len(operands):
        more = "more" if len(operands) > len(terms) else "fewer"
        raise RuntimeError(f"einsum(): {more} operands were provided than specified in the equation "
                           f"{equation!r} ({len(operands)} operands, {len(terms)} terms)")
    labels, ell = [], 0
    for i, (term, x) in enumerate(zip(terms, operands)):
        _check_chars(term, equation)
        head, dots, tail = term.partition("...")
        if "." in head + tail:
            raise RuntimeError(f"einsum(): found '.' for operand {i} that is not part of any ellipsis "
                               f"in {equation!r}")
        n = len(head) + len(tail)
        if (not dots and n != x.ndim) or (dots and n > x.ndim):
            raise RuntimeError(f"einsum(): the number of subscripts in the equation ({n}) "
                               f"{'is more than' if dots else 'does not match'} the number of dimensions "
                               f"({x.ndim}) for operand {i}{'' if dots else ' and no ellipsis was given'}")
        k = x.ndim - n if dots else 0
        ell = max(ell, k)
        labels.append([ord(c) for c in head] + list(range(-k, 0)) + [ord(c) for c in tail])
    if arrow:
        _check_chars(rhs, equation)
        head, dots, tail = rhs.partition("...")
        out = [ord(c) for c in head] + (list(range(-ell, 0)) if dots else []) + [ord(c) for c in tail]
        seen = set()
        for c in out:
            if c in seen:
                raise RuntimeError(f"einsum(): output subscript {chr(c)} appears more than once in the output")
            if c >= 0 and not any(c in lab for lab in labels):
                raise RuntimeError(f"einsum(): output subscript {chr(c)} does not appear in the equation "
                                   f"for any input operand")
            seen.add(c)
    else:  # implicit: the ellipsis dims, then the letters used once, in alphabetical order
        counts = {}
        for lab in labels:
            for c in lab:
                counts[c] = counts.get(c, 0) + 1
        out = list(range(-ell, 0)) + sorted(c for c, n in counts.items() if c >= 0 and n == 1)
    return labels, out


def _check_chars(term, equation):
    for j, c in enumerate(term):
        if not (c.isascii() and c.isalpha()) and c != ".":
            raise RuntimeError(f"einsum(): invalid subscript given at index {equation.index(term) + j} in the "
                               f"equation string {equation!r}, subscripts must be in [a-zA-Z]")


def _name(c):
    return chr(c) if c >= 0 else "..."


def _check_sizes(operands, labels):
    size = {}
    for i, (x, lab) in enumerate(zip(operands, labels)):
        for c, n in zip(lab, x.shape):
            m, j = size.get(c, (1, None))
            if n != m and n != 1 and m != 1:
                raise RuntimeError(f"einsum(): subscript {_name(c)} has size {n} for operand {i} which does not "
                                   f"broadcast with previously seen size {m} (operand {j})")
            if n != 1 or c not in size:
                size[c] = (n, i)


def _diagonals(x, lab):
    """Take the diagonal of each label repeated within one operand ("ii->i")."""
    lab = list(lab)
    while len(set(lab)) < len(lab):
        c = next(c for c in lab if lab.count(c) > 1)
        d1 = lab.index(c)
        d2 = lab.index(c, d1 + 1)
        if x.shape[d1] != x.shape[d2]:
            raise RuntimeError(f"einsum(): subscript {_name(c)} is repeated for operand but the sizes don't match, "
                               f"{x.shape[d1]} != {x.shape[d2]}")
        x = Diagonal.apply(x, offset=0, d1=d1, d2=d2)  # the diagonal goes last
        lab = [l for i, l in enumerate(lab) if i not in (d1, d2)] + [c]
    return x, lab


def _sum_out(x, lab, drop):
    axes = tuple(i for i, c in enumerate(lab) if c in drop)
    if not axes:
        return x, lab
    return x.sum(dim=axes), [c for c in lab if c not in drop]


def _contract(a, la, b, lb, keep):
    """Contract two operands over their shared labels not in ``keep``, through one matmul
    with the batch labels (shared and kept) as leading, broadcasting dims."""
    shared = [c for c in la if c in lb]
    # a contracted label of size 1 on one side broadcasts: sum it out of each side alone
    lone = {c for c in shared if c not in keep and a.shape[la.index(c)] != b.shape[lb.index(c)]}
    a, la = _sum_out(a, la, lone)
    b, lb = _sum_out(b, lb, lone)
    batch = [c for c in la if c in lb and c in keep]
    summed = [c for c in la if c in lb and c not in keep]
    left = [c for c in la if c not in lb]
    right = [c for c in lb if c not in la]
    sa, sb = dict(zip(la, a.shape)), dict(zip(lb, b.shape))
    a = permute(a, [la.index(c) for c in batch + left + summed])
    b = permute(b, [lb.index(c) for c in batch + summed + right])
    n_left = n_right = k = 1
    for c in left:
        n_left *= sa[c]
    for c in right:
        n_right *= sb[c]
    for c in summed:
        k *= sa[c]
    a = a.reshape([sa[c] for c in batch] + [n_left, k])
    b = b.reshape([sb[c] for c in batch] + [k, n_right])
    out = matmul(a, b)
    shape = list(out.shape[:len(batch)]) + [sa[c] for c in left] + [sb[c] for c in right]
    return out.reshape(shape), batch + left + right


def einsum(equation, *operands):
    """Sum of products over the subscripts that the output omits, as torch.einsum: "ij,jk->ik"
    is a matrix product, "bhqd,bhkd->bhqk" a batched one, "ii->" a trace; "..." stands for
    broadcast dims; without "->" the output is the subscripts used once, sorted.

    Args:
        equation: the subscripts, a-z and A-Z, one term per operand.
        operands: the tensors (or one list of them).

    Example:
        >>> dtrain.einsum("ij,jk->ik", dtrain.ones(2, 3), dtrain.ones(3, 4)).shape
        dtrain.Size([2, 4])
    """
    if open_regions[0] and not thread_state.running:
        return autocast_call(einsum, "einsum", equation, *operands)
    if len(operands) == 1 and isinstance(operands[0], (list, tuple)):
        operands = tuple(operands[0])
    if not isinstance(equation, str):
        raise TypeError(f"einsum(): the equation must be a string, got {type(equation).__name__}")
    if not operands:
        raise RuntimeError("einsum(): must provide at least one operand")
    for i, x in enumerate(operands):
        if not isinstance(x, Tensor):
            raise TypeError(f"einsum(): operand {i} must be a Tensor, got {type(x).__name__}")
    labels, out = _parse(equation, operands)
    _check_sizes(operands, labels)
    xs, labs = [], []
    for i, (x, lab) in enumerate(zip(operands, labels)):
        x, lab = _diagonals(x, lab)
        # labels in no other operand and not in the output are summed away at once
        others = set(out).union(*(set(l) for j, l in enumerate(labels) if j != i))
        x, lab = _sum_out(x, lab, {c for c in lab if c not in others})
        xs.append(x)
        labs.append(lab)
    x, lab = xs[0], labs[0]
    for i in range(1, len(xs)):
        keep = set(out).union(*(set(l) for l in labs[i + 1:]))
        x, lab = _contract(x, lab, xs[i], labs[i], keep)
    x, lab = _sum_out(x, lab, {c for c in lab if c not in out})
    return permute(x, [lab.index(c) for c in out])
