"""Recurrent layers: one fused Function per layer and direction (RNN tanh/relu, LSTM, GRU).

Forward projects the inputs of all time steps with one matmul, then loops over time with
one small matmul and a few in-place elementwise calls per step, keeping the activations.
Backward walks time in reverse doing the same, and gets each weight gradient from one
matmul over all steps at the end. Arrays are in processing order (reversed in time for the
reverse direction); the packed output is in time order.
"""
from ..backend import get_array_module
from ..function import Function


def _sigmoid_(a):
    """In place: sigmoid(2a) as 0.5 * tanh(a) + 0.5, which cannot overflow; callers halve
    the sigmoid gates' weights instead of the preactivation (halving is exact, so the
    result is PyTorch's sigmoid to rounding)."""
    xp = get_array_module(a)
    xp.tanh(a, out=a)
    a *= 0.5
    a += 0.5


def _halved(w, *rows):
    """A copy of ``w`` with the rows in the slices ``rows`` (the sigmoid gates) halved."""
    w = w.copy()
    for r in rows:
        w[r] *= 0.5
    return w


def _transposed(w):
    # x @ w.T with w.T contiguous is ~1.5x faster in OpenBLAS for the per-step (B, H) @ (H, G)
    return get_array_module(w).ascontiguousarray(w.T)


def _project(x, w, b):
    """x @ w.T + b for all steps at once: (T, B, I) -> (T, B, G), a fresh contiguous array."""
    T, B, I = x.shape
    out = (x.reshape(T * B, I) @ w.T).reshape(T, B, w.shape[0])
    if b is not None:
        out += b
    return out


def _in_order(x, reverse):
    return x[::-1] if reverse else x


def _mask(lengths, x, reverse):
    """For sequences of different ``lengths`` (padded to T steps): (T, B, 1) in processing
    order, 1 where the step is inside the sequence, 0 where the state must carry over
    unchanged (so the reverse direction starts at each sequence's last step); None if no
    lengths."""
    if lengths is None:
        return None
    xp = get_array_module(x)
    m = xp.arange(x.shape[0])[:, None] < xp.asarray(lengths)[None, :]
    return _in_order(m.astype(x.dtype)[:, :, None], reverse)


class _Recurrent(Function):
    """Shared by the three kinds: the inputs are (x, h0, [c0,] w_ih, w_hh[, b_ih, b_hh]) with
    x (T, B, I), states (B, H), and ``reverse`` runs the sequence backwards in time.

    A subclass's backward loops over time to the gradients of the input-side and hidden-side
    preactivations, (T, B, G) each in processing order; ``_grads`` turns them into the
    gradients of x, h0 and the weights."""

    def _save(self, x, w_ih, w_hh, has_bias, hs, reverse, mask):
        self.x, self.w_ih, self.w_hh, self.has_bias, self.hs, self.reverse = x, w_ih, w_hh, has_bias, hs, reverse
        self.mask = mask

    def _grads(self, dgx, dgh, dh0):
        """(dx, dh0, dw_ih, dw_hh[, db_ih, db_hh]) from the preactivation gradients, None where
        no gradient is wanted."""
        x, w_ih = self.x, self.w_ih
        T, B, I = x.shape
        G = dgx.shape[2]
        gx2, gh2 = dgx.reshape(T * B, G), dgh.reshape(T * B, G)
        first = 3 if isinstance(self, LSTMLayer) else 2  # the index of w_ih among the inputs
        need_w = self.needs_input_grad[first:first + (4 if self.has_bias else 2)]
        dx = None
        if self.needs_input_grad[0]:
            dx = _in_order((gx2 @ w_ih).reshape(T, B, I), self.reverse)
        dw = [gx2.T @ _in_order(x, self.reverse).reshape(T * B, I) if need_w[0] else None,
              gh2.T @ self.hs[:-1].reshape(T * B, -1) if need_w[1] else None]
        if self.has_bias:
            db = gx2.sum(axis=0) if need_w[2] or (dgh is dgx and need_w[3]) else None
            # one array per input: the engine may keep each as a .grad
            dw += [db if need_w[2] else None,
                   (db.copy() if dgh is dgx else gh2.sum(axis=0)) if need_w[3] else None]
        return dx, dh0, *dw

    def _dy(self, g):
        """The output gradient in processing order, (T, B, H)."""
        return _in_order(g[:self.x.shape[0]], self.reverse)


class RNNLayer(_Recurrent):
    """h_t = act(W_ih x_t + b_ih + W_hh h_{t-1} + b_hh), act tanh or relu. Output (T, B, H)."""

    def forward(self, x, h0, w_ih, w_hh, b_ih=None, b_hh=None, reverse=False, nonlinearity="tanh", lengths=None):
        xp = get_array_module(x)
        mask = _mask(lengths, x, reverse)
        T, B, _ = x.shape
        hs = xp.empty((T + 1, B, h0.shape[1]), dtype=x.dtype)
        hs[0] = h0
        hs[1:] = _project(_in_order(x, reverse), w_ih, None if b_ih is None else b_ih + b_hh)
        w_hh_t = _transposed(w_hh)
        relu = nonlinearity == "relu"
        for t in range(T):
            a = hs[t + 1]
            a += hs[t] @ w_hh_t
            if relu:
                xp.maximum(a, 0, out=a)
            else:
                xp.tanh(a, out=a)
            if mask is not None:
                xp.copyto(a, hs[t], where=mask[t] == 0)
        self._save(x, w_ih, w_hh, b_ih is not None, hs, reverse, mask)
        self.relu = relu
        return _in_order(hs[1:], reverse).copy()

    def backward(self, g):
        xp = get_array_module(g)
        h = self.hs[1:]
        deriv = (h > 0).astype(h.dtype) if self.relu else 1 - h * h
        mask = self.mask
        if mask is not None:
            deriv *= mask
        dy, w_hh = self._dy(g), self.w_hh
        dg = xp.empty_like(h)
        dh = xp.zeros_like(h[0])
        for t in range(len(h) - 1, -1, -1):
            dh += dy[t]
            xp.multiply(dh, deriv[t], out=dg[t])
            carried = None if mask is None else dh * (1 - mask[t])
            dh = dg[t] @ w_hh
            if carried is not None:
                dh += carried
        return self._grads(dg, dg, dh)


class LSTMLayer(_Recurrent):
    """PyTorch's LSTM (gate rows i, f, g, o): c_t = f c_{t-1} + i g, h_t = o tanh(c_t), or
    with ``proj`` (the last input is w_hr, (P, H)): h_t = w_hr (o tanh(c_t)).
    Output, flat: the h_t (T, B, P) in time order, then c_n (B, H)."""

    def forward(self, x, h0, c0, w_ih, w_hh, *rest, reverse=False, proj=False, lengths=None):
        xp = get_array_module(x)
        mask = _mask(lengths, x, reverse)
        b_ih, b_hh = rest[:2] if len(rest) >= 2 else (None, None)
        T, B, _ = x.shape
        P, H = h0.shape[1], c0.shape[1]
        sigs = (slice(0, 2 * H), slice(3 * H, 4 * H))  # the rows of i, f and o
        b = None if b_ih is None else _halved(b_ih + b_hh, *sigs)
        acts = _project(_in_order(x, reverse), _halved(w_ih, *sigs), b)  # (T, B, 4H): i, f, g, o
        w_hh_t = _transposed(_halved(w_hh, *sigs))
        w_hr_t = _transposed(rest[-1]) if proj else None
        hs = xp.empty((T + 1, B, P), dtype=x.dtype)
        cs = xp.empty((T + 1, B, H), dtype=x.dtype)
        tc = xp.empty((T, B, H), dtype=x.dtype)  # tanh(c_t)
        m = xp.empty((T, B, H), dtype=x.dtype) if proj else hs[1:]  # o tanh(c_t), before the projection
        hs[0], cs[0] = h0, c0
        for t in range(T):
            a = acts[t]
            a += hs[t] @ w_hh_t
            xp.tanh(a, out=a)  # all four gates in one call; then sigmoid = 0.5 tanh + 0.5 for i, f, o
            for sig in (a[:, :2 * H], a[:, 3 * H:]):
                sig *= 0.5
                sig += 0.5
            c = cs[t + 1]
            xp.multiply(a[:, H:2 * H], cs[t], out=c)
            c += a[:, :H] * a[:, 2 * H:3 * H]
            xp.tanh(c, out=tc[t])
            xp.multiply(a[:, 3 * H:], tc[t], out=m[t])
            if proj:
                xp.matmul(m[t], w_hr_t, out=hs[t + 1])
            if mask is not None:
                keep = mask[t] == 0
                xp.copyto(c, cs[t], where=keep)
                xp.copyto(hs[t + 1], hs[t], where=keep)
                if proj:
                    m[t] *= mask[t]  # no weight_hr gradient from steps outside the sequence
        self._save(x, w_ih, w_hh, b_ih is not None, hs, reverse, mask)
        self.acts, self.cs, self.tc, self.m = acts, cs, tc, m
        self.w_hr = rest[-1] if proj else None
        out = xp.empty(T * B * P + B * H, dtype=x.dtype)
        out[:T * B * P].reshape(T, B, P)[...] = _in_order(hs[1:], reverse)
        out[T * B * P:].reshape(B, H)[...] = cs[T]
        return out

    def backward(self, g):
        xp = get_array_module(g)
        T, B, H = self.tc.shape
        P = self.hs.shape[2]
        a = self.acts.reshape(T, B, 4, H)
        i, f, gg, o = a[:, :, 0], a[:, :, 1], a[:, :, 2], a[:, :, 3]
        tc, w_hr = self.tc, self.w_hr
        # each preactivation gradient is dc (gates i, f, g) or dm (gate o; m = o tanh(c), m = h
        # without projection) times a coefficient that does not depend on the gradients, so
        # all of them are computed before the loop
        k = xp.empty_like(a)
        for sig, ksig in ((a[:, :, :2], k[:, :, :2]), (o, k[:, :, 3])):
            xp.subtract(1, sig, out=ksig)
            ksig *= sig
        k[:, :, 0] *= gg
        k[:, :, 1] *= self.cs[:-1]
        k[:, :, 3] *= tc
        xp.multiply(gg, gg, out=k[:, :, 2])
        xp.subtract(1, k[:, :, 2], out=k[:, :, 2])
        k[:, :, 2] *= i
        dc_dm = tc * tc
        xp.subtract(1, dc_dm, out=dc_dm)
        dc_dm *= o
        mask = self.mask
        if mask is not None:  # outside a sequence: no gate gradients, and dh, dc carry over
            k *= mask[:, :, :, None]
            dc_dm *= mask
            f = f * mask + (1 - mask)
        dy = self._dy(g[:T * B * P].reshape(T, B, P))
        w_hh = self.w_hh
        dgates = xp.empty_like(a)
        dhs = xp.empty((T, B, P), dtype=g.dtype) if w_hr is not None else None
        dh = xp.zeros((B, P), dtype=g.dtype)
        dc = g[T * B * P:].reshape(B, H).copy()
        buf = xp.empty_like(dc)
        for t in range(T - 1, -1, -1):
            dh += dy[t]
            if w_hr is not None:
                dhs[t] = dh
                dm = dh @ w_hr
            else:
                dm = dh
            xp.multiply(dm, dc_dm[t], out=buf)
            dc += buf
            d = dgates[t]
            xp.multiply(dc[:, None, :], k[t, :, :3], out=d[:, :3])
            xp.multiply(dm, k[t, :, 3], out=d[:, 3])
            dc *= f[t]
            carried = None if mask is None else dh * (1 - mask[t])
            dh = d.reshape(B, 4 * H) @ w_hh
            if carried is not None:
                dh += carried
        dgates = dgates.reshape(T, B, 4 * H)
        dx, dh0, *dw = self._grads(dgates, dgates, dh)
        if w_hr is not None:
            dw.append(dhs.reshape(T * B, P).T @ self.m.reshape(T * B, H) if self.needs_input_grad[-1] else None)
        return (dx, dh0, dc, *dw)


class GRULayer(_Recurrent):
    """PyTorch's GRU (gate rows r, z, n): n = tanh(W_in x + b_in + r (W_hn h + b_hn)),
    h_t = (1 - z) n + z h_{t-1}. Output (T, B, H)."""

    def forward(self, x, h0, w_ih, w_hh, b_ih=None, b_hh=None, reverse=False, lengths=None):
        xp = get_array_module(x)
        mask = _mask(lengths, x, reverse)
        T, B, _ = x.shape
        H = h0.shape[1]
        sigs = slice(0, 2 * H)  # the rows of r and z
        acts = _project(_in_order(x, reverse), _halved(w_ih, sigs),
                        None if b_ih is None else _halved(b_ih, sigs))  # (T, B, 3H): r, z, n
        w_hh_t = _transposed(_halved(w_hh, sigs))
        b_hh = None if b_hh is None else _halved(b_hh, sigs)
        gh = xp.empty_like(acts)  # W_hh h + b_hh; its n part is kept for backward
        hs = xp.empty((T + 1, B, H), dtype=x.dtype)
        hs[0] = h0
        for t in range(T):
            a, h = acts[t], hs[t]
            xp.matmul(h, w_hh_t, out=gh[t])
            if b_hh is not None:
                gh[t] += b_hh
            rz, n = a[:, :2 * H], a[:, 2 * H:]
            rz += gh[t, :, :2 * H]
            _sigmoid_(rz)
            n += a[:, :H] * gh[t, :, 2 * H:]
            xp.tanh(n, out=n)
            h_new = hs[t + 1]
            xp.subtract(h, n, out=h_new)
            h_new *= a[:, H:2 * H]
            h_new += n
            if mask is not None:
                xp.copyto(h_new, h, where=mask[t] == 0)
        self._save(x, w_ih, w_hh, b_ih is not None, hs, reverse, mask)
        self.acts, self.ghn = acts, gh[:, :, 2 * H:]
        return _in_order(hs[1:], reverse).copy()

    def backward(self, g):
        xp = get_array_module(g)
        T, B, H = self.ghn.shape
        a = self.acts
        r, z, n = a[:, :, :H], a[:, :, H:2 * H], a[:, :, 2 * H:]
        # gradient coefficients: dn_pre = dh * k_n, dz_pre = dh * k_z, dr_pre = dn_pre * k_r
        k_n = (1 - z) * (1 - n * n)
        k_z = (self.hs[:-1] - n) * z * (1 - z)
        k_r = self.ghn * r * (1 - r)
        mask = self.mask
        if mask is not None:  # outside a sequence: no gate gradients, and dh carries over
            k_n *= mask
            k_z *= mask
            z = z * mask + (1 - mask)
        dy, w_hh = self._dy(g), self.w_hh
        dgx = xp.empty_like(a)
        dgh = xp.empty_like(a)
        dh = xp.zeros((B, H), dtype=g.dtype)
        for t in range(T - 1, -1, -1):
            dh += dy[t]
            dx_t, dh_t = dgx[t], dgh[t]
            dn = dx_t[:, 2 * H:]
            xp.multiply(dh, k_n[t], out=dn)
            xp.multiply(dh, k_z[t], out=dx_t[:, H:2 * H])
            xp.multiply(dn, k_r[t], out=dx_t[:, :H])
            dh_t[:, :2 * H] = dx_t[:, :2 * H]
            xp.multiply(dn, r[t], out=dh_t[:, 2 * H:])
            dh *= z[t]
            dh += dh_t @ w_hh
        return self._grads(dgx, dgh, dh)


def recurrent_layer(mode, input, h0, c0, weights, reverse=False, lengths=None):
    """One layer in one direction of an RNN ('RNN_TANH', 'RNN_RELU'), LSTM or GRU.

    Args:
        mode: 'RNN_TANH', 'RNN_RELU', 'LSTM' or 'GRU'.
        input: (T, B, input_size), T >= 1.
        h0, c0: (B, hidden_size) initial states (c0 for LSTM only, else None); with an LSTM
            projection h0 is (B, proj_size).
        weights: [w_ih, w_hh] or [w_ih, w_hh, b_ih, b_hh] with PyTorch's gate order; an LSTM
            with projections appends w_hr (proj_size, hidden_size).
        reverse: run from the last step to the first (the reverse direction).
        lengths: optional B sequence lengths (ints <= T): each sequence's state stops at its
            last step (forward) or starts there (reverse); outputs past it are not defined.

    Returns (output (T, B, hidden_size or proj_size), h_n, c_n or None) as Tensors.

    Example:
        >>> out, h, _ = recurrent_layer("GRU", x, h0, None, [w_ih, w_hh])
    """
    T = input.shape[0]
    c_n = None
    if mode == "LSTM":
        packed = LSTMLayer.apply(input, h0, c0, *weights, reverse=reverse, proj=len(weights) % 2 == 1,
                                 lengths=lengths)
        n = T * h0.shape[0] * h0.shape[1]
        out, c_n = packed[:n].reshape(T, *h0.shape), packed[n:].reshape(c0.shape)
    elif mode == "GRU":
        out = GRULayer.apply(input, h0, *weights, reverse=reverse, lengths=lengths)
    else:
        out = RNNLayer.apply(input, h0, *weights, reverse=reverse, lengths=lengths,
                             nonlinearity="relu" if mode == "RNN_RELU" else "tanh")
    return out, out[0 if reverse else T - 1], c_n
