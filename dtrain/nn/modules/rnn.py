"""Recurrent layers: RNN, LSTM, GRU and their single-step cells (as torch.nn)."""
import math
import numbers
import warnings

from ...tensor import Tensor, cat, empty, stack, zeros
from ...tensor.ops.rnn import recurrent_layer
from .. import functional as F
from .. import init
from ..module import Module
from ..parameter import Parameter
from ..utils.rnn import PackedSequence, packed_to_padded, padded_to_packed_data
from ._checks import check_int

_GATES = {"RNN_TANH": 1, "RNN_RELU": 1, "LSTM": 4, "GRU": 3}


def _nonlinearity_mode(layer, nonlinearity):
    if nonlinearity == "tanh":
        return "RNN_TANH"
    if nonlinearity == "relu":
        return "RNN_RELU"
    raise ValueError(f"{layer}: Unknown nonlinearity '{nonlinearity}'. Select from 'tanh' or 'relu'.")


def _check_input_tensor(name, input, min_ndim, input_size, weight, size_message):
    """The input checks the layers and the cells share: a Tensor of ``min_ndim`` (unbatched) or
    one more dims, ``input_size`` features (``size_message`` formats ``got`` and ``expected``)
    and ``weight``'s dtype."""
    if not isinstance(input, Tensor):
        raise TypeError(f"{name}: input must be a Tensor, got {type(input).__name__}")
    if input.ndim not in (min_ndim, min_ndim + 1):
        raise ValueError(f"{name}: Expected input to be {min_ndim}D or {min_ndim + 1}D, got {input.ndim}D instead")
    if input.shape[-1] != input_size:
        raise RuntimeError(f"{name}: {size_message.format(got=input.shape[-1], expected=input_size)}")
    if input.dtype != weight.dtype:
        raise ValueError(f"{name}: input must have the type {weight.dtype}, got type {input.dtype}")


def _reset_uniform(module):
    """PyTorch's init for every recurrent weight and bias: U(-1/sqrt(hidden), 1/sqrt(hidden))."""
    stdv = 1.0 / math.sqrt(module.hidden_size) if module.hidden_size > 0 else 0
    for w in module.parameters():
        init.uniform_(w, -stdv, stdv)


class RNNBase(Module):
    """The multi-layer, optionally bidirectional recurrent layer behind RNN, LSTM and GRU.

    Parameters per layer ``k`` and direction (suffix ``_reverse`` for the backward one):
    ``weight_ih_l{k}`` (gates * hidden_size, input size of the layer), ``weight_hh_l{k}``
    (gates * hidden_size, hidden_size or proj_size), ``bias_ih_l{k}``, ``bias_hh_l{k}``, and
    for an LSTM with projections ``weight_hr_l{k}`` (proj_size, hidden_size), in PyTorch's
    order and gate layout, so state_dicts load both ways.
    """

    def __init__(self, mode, input_size, hidden_size, num_layers=1, bias=True, batch_first=False, dropout=0.0,
                 bidirectional=False, proj_size=0, device=None, dtype=None):
        super().__init__()
        name = {"RNN_TANH": "RNN", "RNN_RELU": "RNN"}.get(mode, mode)
        self.mode = mode
        self.input_size = check_int(name, "input_size", input_size)
        self.hidden_size = check_int(name, "hidden_size", hidden_size, minimum=1)
        self.num_layers = check_int(name, "num_layers", num_layers, minimum=1)
        self.bias, self.batch_first, self.bidirectional = bool(bias), bool(batch_first), bool(bidirectional)
        if isinstance(dropout, bool) or not isinstance(dropout, numbers.Real) or not 0 <= dropout <= 1:
            raise ValueError(f"{name}: dropout should be a number in range [0, 1] representing the probability "
                             f"of an element being zeroed, got {dropout!r}")
        if dropout > 0 and num_layers == 1:
            warnings.warn(f"dropout option adds dropout after all but last recurrent layer, so non-zero dropout "
                          f"expects num_layers greater than 1, but got dropout={dropout} and num_layers={num_layers}")
        self.dropout = float(dropout)
        self.proj_size = check_int(name, "proj_size", proj_size)
        if proj_size:
            if mode != "LSTM":
                raise ValueError(f"{name}: proj_size argument is only supported for LSTM, not RNN or GRU")
            if proj_size >= hidden_size:
                raise ValueError(f"{name}: proj_size has to be smaller than hidden_size, got proj_size={proj_size} "
                                 f"and hidden_size={hidden_size}")
        gate_size = _GATES[mode] * hidden_size
        out_size = proj_size or hidden_size  # the size of h (and of each direction's output)
        directions = 2 if bidirectional else 1
        self._flat_weights_names, self._all_weights = [], []
        for layer in range(num_layers):
            layer_input = input_size if layer == 0 else out_size * directions
            for direction in range(directions):
                suffix = f"_l{layer}" + ("_reverse" if direction else "")
                shapes = [("weight_ih", (gate_size, layer_input)), ("weight_hh", (gate_size, out_size))]
                if bias:
                    shapes += [("bias_ih", (gate_size,)), ("bias_hh", (gate_size,))]
                if proj_size:
                    shapes += [("weight_hr", (proj_size, hidden_size))]
                names = [n + suffix for n, _ in shapes]
                for n, (_, shape) in zip(names, shapes):
                    setattr(self, n, Parameter(empty(*shape, dtype=dtype, device=device)))
                self._flat_weights_names += names
                self._all_weights.append(names)
        self.reset_parameters()

    def reset_parameters(self):
        _reset_uniform(self)

    def flatten_parameters(self):
        """A no-op: PyTorch compacts cuDNN's weight buffer here; dtrain has none."""

    @property
    def _flat_weights(self):
        return [getattr(self, n) for n in self._flat_weights_names]

    @property
    def all_weights(self):
        return [[getattr(self, n) for n in names] for names in self._all_weights]

    def _layer_name(self):
        return type(self).__name__

    def _check_input(self, input):
        name = self._layer_name()
        _check_input_tensor(name, input, 2, self.input_size, self.weight_ih_l0,
                            "input.size(-1) must be equal to input_size. Expected {expected}, got {got}")
        steps = input.shape[0 if input.ndim == 2 or not self.batch_first else 1]
        if steps == 0:
            raise RuntimeError(f"{name}: Expected sequence length to be larger than 0, got input of shape "
                               f"{list(input.shape)}")

    def _check_state(self, state, expected, what, batched):
        name = self._layer_name()
        if not isinstance(state, Tensor):
            raise TypeError(f"{name}: {what} must be a Tensor, got {type(state).__name__}")
        dims = 3 if batched else 2
        if state.ndim != dims:
            kind = "batched 3-D" if batched else "unbatched 2-D"
            raise RuntimeError(f"{name}: For {kind} input, {what} should also be {dims}-D but got "
                               f"{state.ndim}-D tensor")
        if tuple(state.shape) != expected:
            raise RuntimeError(f"{name}: Expected {what} size {expected}, got {tuple(state.shape)}")
        if state.dtype != self.weight_ih_l0.dtype:
            raise RuntimeError(f"{name}: Input and hidden tensors are not the same dtype, found input tensor with "
                               f"{self.weight_ih_l0.dtype} and {what} tensor with {state.dtype}")

    def forward(self, input, hx=None):
        """Run the sequence through every layer and direction.

        Args:
            input: (L, N, input_size), or (N, L, input_size) with batch_first, or
                unbatched (L, input_size), or a PackedSequence (nn.utils.rnn).
            hx: initial hidden state (num_layers * num_directions, N, hidden_size), or
                unbatched (num_layers * num_directions, hidden_size); for LSTM a tuple
                (h_0, c_0). Zeros when omitted.

        Returns:
            (output, h_n), or (output, (h_n, c_n)) for LSTM; output is (L, N, D *
            hidden_size) (batch-first if the input is), or a PackedSequence for one.
        """
        packed = input if isinstance(input, PackedSequence) else None
        lengths = None
        if packed is not None:
            input, lengths = packed_to_padded(packed)  # (T, B, *), sorted by length
            if self.batch_first:
                input = input.transpose(0, 1)
        self._check_input(input)
        batched = input.ndim == 3
        lstm = self.mode == "LSTM"
        x = input if not batched else input.transpose(0, 1) if self.batch_first else input
        if not batched:
            x = x.unsqueeze(1)
        directions = 2 if self.bidirectional else 1
        c_shape = (self.num_layers * directions, x.shape[1], self.hidden_size)
        h_shape = c_shape[:2] + (self.proj_size or self.hidden_size,)
        if hx is None:
            h0 = zeros(*h_shape, dtype=x.dtype, device=x.device)
            c0 = (h0 if not self.proj_size else zeros(*c_shape, dtype=x.dtype, device=x.device)) if lstm else None
        else:
            if lstm:
                if not isinstance(hx, (tuple, list)) or len(hx) != 2:
                    raise TypeError(f"LSTM: hx must be a tuple (h_0, c_0), got {type(hx).__name__}")
                h0, c0 = hx
                self._check_state(h0, h_shape if batched else h_shape[::2], "hidden[0]", batched)
                self._check_state(c0, c_shape if batched else c_shape[::2], "hidden[1]", batched)
            else:
                h0, c0 = hx, None
                self._check_state(h0, h_shape if batched else h_shape[::2], "hidden", batched)
            if not batched:
                h0, c0 = h0.unsqueeze(1), None if c0 is None else c0.unsqueeze(1)
            if packed is not None and packed.sorted_indices is not None:  # states in the sorted order
                h0 = h0.index_select(1, packed.sorted_indices)
                c0 = None if c0 is None else c0.index_select(1, packed.sorted_indices)
        h_n, c_n = [], []
        weights = self.all_weights
        for layer in range(self.num_layers):
            outs = []
            for d in range(directions):
                k = layer * directions + d
                out, h, c = recurrent_layer(self.mode, x, h0[k], None if c0 is None else c0[k], weights[k],
                                            reverse=d == 1, lengths=lengths)
                outs.append(out)
                h_n.append(h)
                c_n.append(c)
            x = outs[0] if directions == 1 else cat(outs, 2)
            if self.dropout and self.training and layer < self.num_layers - 1:
                x = F.dropout(x, self.dropout, True)
        h_n = stack(h_n)
        c_n = stack(c_n) if lstm else None
        if packed is not None:
            if packed.unsorted_indices is not None:
                h_n = h_n.index_select(1, packed.unsorted_indices)
                c_n = None if c_n is None else c_n.index_select(1, packed.unsorted_indices)
            x = PackedSequence(padded_to_packed_data(x, packed.batch_sizes.tolist()), packed.batch_sizes,
                               packed.sorted_indices, packed.unsorted_indices)
        elif not batched:
            x, h_n = x.squeeze(1), h_n.squeeze(1)
            c_n = None if c_n is None else c_n.squeeze(1)
        elif self.batch_first:
            x = x.transpose(0, 1)
        return x, ((h_n, c_n) if lstm else h_n)

    def extra_repr(self):
        s = f"{self.input_size}, {self.hidden_size}"
        if self.proj_size:
            s += f", proj_size={self.proj_size}"
        if self.num_layers != 1:
            s += f", num_layers={self.num_layers}"
        if not self.bias:
            s += ", bias=False"
        if self.batch_first:
            s += ", batch_first=True"
        if self.dropout:
            s += f", dropout={self.dropout}"
        if self.bidirectional:
            s += ", bidirectional=True"
        return s


class RNN(RNNBase):
    """Elman RNN: h_t = tanh(x_t W_ih^T + b_ih + h_{t-1} W_hh^T + b_hh) (or relu), as torch.nn.RNN.

    Args:
        input_size: features of the input x.
        hidden_size: features of the hidden state h.
        num_layers: stacked layers (default 1).
        nonlinearity: 'tanh' (default) or 'relu'.
        bias: learn b_ih and b_hh (default True).
        batch_first: input and output are (N, L, H_in) instead of (L, N, H_in).
        dropout: dropout on the outputs of every layer except the last (default 0).
        bidirectional: add a reverse-time direction; outputs are concatenated.

    Example:
        >>> rnn = nn.RNN(10, 20, 2)
        >>> out, h_n = rnn(dtrain.randn(5, 3, 10), dtrain.randn(2, 3, 20))
        >>> out.shape, h_n.shape
        (dtrain.Size([5, 3, 20]), dtrain.Size([2, 3, 20]))
    """

    def __init__(self, input_size, hidden_size, num_layers=1, nonlinearity="tanh", bias=True, batch_first=False,
                 dropout=0.0, bidirectional=False, device=None, dtype=None):
        super().__init__(_nonlinearity_mode("RNN", nonlinearity), input_size, hidden_size, num_layers, bias,
                         batch_first, dropout, bidirectional, device=device, dtype=dtype)
        self.nonlinearity = nonlinearity


class LSTM(RNNBase):
    """Long short-term memory, as torch.nn.LSTM (gates i, f, g, o in the weight rows):

        i, f, o = sigmoid(...), g = tanh(...); c_t = f * c_{t-1} + i * g; h_t = o * tanh(c_t)

    Args: as ``RNN`` without nonlinearity, plus ``proj_size``: when > 0, h_t = W_hr (o * tanh(c_t))
    has proj_size features (h_0, h_n and the output too; c keeps hidden_size).
    forward(input, (h_0, c_0)) returns (output, (h_n, c_n)).

    Example:
        >>> lstm = nn.LSTM(10, 20, 2)
        >>> out, (h_n, c_n) = lstm(dtrain.randn(5, 3, 10))
        >>> out.shape, c_n.shape
        (dtrain.Size([5, 3, 20]), dtrain.Size([2, 3, 20]))
    """

    def __init__(self, input_size, hidden_size, num_layers=1, bias=True, batch_first=False, dropout=0.0,
                 bidirectional=False, proj_size=0, device=None, dtype=None):
        super().__init__("LSTM", input_size, hidden_size, num_layers, bias, batch_first, dropout, bidirectional,
                         proj_size, device=device, dtype=dtype)


class GRU(RNNBase):
    """Gated recurrent unit, as torch.nn.GRU (gates r, z, n in the weight rows):

        r, z = sigmoid(...); n = tanh(W_in x + b_in + r * (W_hn h + b_hn)); h_t = (1 - z) * n + z * h_{t-1}

    Args: as ``RNN`` without nonlinearity.

    Example:
        >>> out, h_n = nn.GRU(10, 20, batch_first=True)(dtrain.randn(3, 5, 10))
        >>> out.shape
        dtrain.Size([3, 5, 20])
    """

    def __init__(self, input_size, hidden_size, num_layers=1, bias=True, batch_first=False, dropout=0.0,
                 bidirectional=False, device=None, dtype=None):
        super().__init__("GRU", input_size, hidden_size, num_layers, bias, batch_first, dropout, bidirectional,
                         device=device, dtype=dtype)


class RNNCellBase(Module):
    """One time step of a recurrent layer: parameters weight_ih, weight_hh, bias_ih, bias_hh."""

    def __init__(self, mode, input_size, hidden_size, bias, device=None, dtype=None):
        super().__init__()
        name = type(self).__name__
        self.mode = mode
        self.input_size = check_int(name, "input_size", input_size)
        self.hidden_size = check_int(name, "hidden_size", hidden_size, minimum=1)
        self.bias = bool(bias)
        gate_size = _GATES[mode] * hidden_size
        self.weight_ih = Parameter(empty(gate_size, input_size, dtype=dtype, device=device))
        self.weight_hh = Parameter(empty(gate_size, hidden_size, dtype=dtype, device=device))
        self.bias_ih = Parameter(empty(gate_size, dtype=dtype, device=device)) if bias else None
        self.bias_hh = Parameter(empty(gate_size, dtype=dtype, device=device)) if bias else None
        self.reset_parameters()

    def reset_parameters(self):
        _reset_uniform(self)

    def _state(self, hx, batch, input, what, batched):
        name = type(self).__name__
        if hx is None:
            return zeros(batch, self.hidden_size, dtype=input.dtype, device=input.device)
        if not isinstance(hx, Tensor):
            raise TypeError(f"{name}: {what} must be a Tensor, got {type(hx).__name__}")
        if hx.ndim != input.ndim:
            raise RuntimeError(f"{name}: {what} must be {input.ndim}-D like the input, got {hx.ndim}-D "
                               f"(shape {list(hx.shape)})")
        if hx.shape[-1] != self.hidden_size:
            raise RuntimeError(f"{name}: {what} has inconsistent hidden_size: got {hx.shape[-1]}, "
                               f"expected {self.hidden_size}")
        if batched and hx.shape[0] != batch:
            raise RuntimeError(f"{name}: Input batch size {batch} doesn't match {what} batch size {hx.shape[0]}")
        if hx.dtype != input.dtype:
            raise RuntimeError(f"{name}: Input and {what} tensors are not the same dtype, found input tensor with "
                               f"{input.dtype} and {what} tensor with {hx.dtype}")
        return hx if batched else hx.unsqueeze(0)

    def forward(self, input, hx=None):
        """One step: input (N, input_size) or unbatched (input_size,); hx (N, hidden_size)
        (for LSTMCell a tuple (h, c)), zeros when omitted. Returns h' (LSTMCell: (h', c'))."""
        name = type(self).__name__
        _check_input_tensor(name, input, 1, self.input_size, self.weight_ih,
                            "input has inconsistent input_size: got {got}, expected {expected}")
        batched = input.ndim == 2
        batch = input.shape[0] if batched else 1
        lstm = self.mode == "LSTM"
        if lstm and hx is not None:
            if not isinstance(hx, (tuple, list)) or len(hx) != 2:
                raise TypeError(f"{name}: hx must be a tuple (h_0, c_0), got {type(hx).__name__}")
            h0, c0 = (self._state(s, batch, input, f"hidden{i}", batched) for i, s in enumerate(hx))
        else:
            h0 = self._state(hx, batch, input, "hidden", batched)
            c0 = h0 if lstm else None
        x = input.unsqueeze(0) if batched else input.reshape(1, 1, -1)
        weights = [self.weight_ih, self.weight_hh] + ([self.bias_ih, self.bias_hh] if self.bias else [])
        _, h, c = recurrent_layer(self.mode, x, h0, c0, weights)
        if not batched:
            h, c = h.squeeze(0), None if c is None else c.squeeze(0)
        return (h, c) if lstm else h

    def extra_repr(self):
        s = f"{self.input_size}, {self.hidden_size}"
        if not self.bias:
            s += ", bias=False"
        if self.mode == "RNN_RELU":
            s += ", nonlinearity=relu"  # unquoted, as PyTorch prints it
        return s


class RNNCell(RNNCellBase):
    """h' = tanh(x W_ih^T + b_ih + h W_hh^T + b_hh) (or relu), as torch.nn.RNNCell.

    Example:
        >>> cell = nn.RNNCell(10, 20)
        >>> cell(dtrain.randn(3, 10)).shape
        dtrain.Size([3, 20])
    """

    def __init__(self, input_size, hidden_size, bias=True, nonlinearity="tanh", device=None, dtype=None):
        super().__init__(_nonlinearity_mode("RNNCell", nonlinearity), input_size, hidden_size, bias, device, dtype)
        self.nonlinearity = nonlinearity


class LSTMCell(RNNCellBase):
    """One LSTM step, as torch.nn.LSTMCell: forward(input, (h, c)) returns (h', c').

    Example:
        >>> h, c = nn.LSTMCell(10, 20)(dtrain.randn(3, 10))
        >>> h.shape
        dtrain.Size([3, 20])
    """

    def __init__(self, input_size, hidden_size, bias=True, device=None, dtype=None):
        super().__init__("LSTM", input_size, hidden_size, bias, device, dtype)


class GRUCell(RNNCellBase):
    """One GRU step, as torch.nn.GRUCell: forward(input, h) returns h'.

    Example:
        >>> nn.GRUCell(10, 20)(dtrain.randn(3, 10)).shape
        dtrain.Size([3, 20])
    """

    def __init__(self, input_size, hidden_size, bias=True, device=None, dtype=None):
        super().__init__("GRU", input_size, hidden_size, bias, device, dtype)
