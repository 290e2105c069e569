"""Public names of CuPy 14.2 (``dir()`` of the installed package, generated once): the
emulation offers a NumPy function under a CuPy module only where CuPy has that name, so
code that calls something CuPy lacks fails here as it would on a GPU."""

CUPY = frozenset("""
AxisError ComplexWarning DataSource ElementwiseKernel Inf Infinity ModuleDeprecationWarning NAN
NINF NZERO NaN PINF PZERO RankWarning RawKernel RawModule ReductionKernel TooHardError
VisibleDeprecationWarning abs absolute acos acosh add all allclose alltrue amax amin angle
annotations any append apply_along_axis apply_over_axes arange arccos arccosh arcsin arcsinh
arctan arctan2 arctanh argmax argmin argpartition argsort argwhere around array array2string
array_equal array_equiv array_repr array_split array_str asanyarray asarray asarray_chkfinite
ascontiguousarray asfarray asfortranarray asin asinh asnumpy astype atan atan2 atanh atleast_1d
atleast_2d atleast_3d average bartlett base_repr binary_repr bincount bitwise_and bitwise_count
bitwise_invert bitwise_left_shift bitwise_not bitwise_or bitwise_right_shift bitwise_xor
blackman bool bool_ broadcast broadcast_arrays broadcast_shapes broadcast_to byte byte_bounds c_
can_cast cbrt cdouble ceil cfloat choose clear_memo clip column_stack common_type complex128
complex64 complex_ complexfloating compress concat concatenate conj conjugate convolve copy
copysign copyto corrcoef correlate cos cosh count_nonzero cov cross csingle cuda cumprod
cumproduct cumsum cumulative_prod cumulative_sum deg2rad degrees delete diag diag_indices
diag_indices_from diagflat diagonal diff digitize disable_experimental_feature_warning disp
divide divmod dot double dsplit dstack dtype e ediff1d einsum empty empty_like equal euler_gamma
exceptions exp exp2 expand_dims expm1 extract eye fabs fft fill_diagonal find_common_type finfo
fix flatiter flatnonzero flip fliplr flipud float16 float32 float64 float_ float_power floating
floor floor_divide fmax fmin fmod format_float_positional format_float_scientific format_parser
frexp fromDlpack from_dlpack frombuffer fromfile fromfunction fromiter fromstring full full_like
fuse gcd generic genfromtxt get_array_module get_array_wrap get_default_memory_pool
get_default_pinned_memory_pool get_printoptions gradient greater greater_equal half hamming
hanning heaviside histogram histogram2d histogramdd hsplit hstack hypot i0 identity iinfo imag
in1d index_exp indices inexact inf infty inner int16 int32 int64 int8 int_ intc integer interp
intersect1d intp invert is_available isclose iscomplex iscomplexobj isdtype isfinite isfortran
isin isinf isnan isneginf isposinf isreal isrealobj isscalar issctype issubclass_ issubdtype
issubsctype iterable ix_ kaiser kron lcm ldexp left_shift less less_equal lexsort lib linalg
linspace load loadtxt log log10 log1p log2 logaddexp logaddexp2 logical_and logical_not
logical_or logical_xor logspace long longlong make_aligned_dtype mask_indices matmul
matrix_transpose max maximum may_share_memory mean median memoize meshgrid mgrid min
min_scalar_type minimum mintypecode mod modf moveaxis msort multiply nan nan_to_num nanargmax
nanargmin nancumprod nancumsum nanmax nanmean nanmedian nanmin nanprod nanstd nansum nanvar
ndarray ndim ndindex negative newaxis nextafter nonzero not_equal number obj2sctype ogrid ones
ones_like outer packbits pad partition percentile permute_dims pi piecewise place poly poly1d
polyadd polyfit polymul polynomial polysub polyval positive pow power printoptions prod product
promote_types ptp put put_along_axis putmask quantile r_ rad2deg radians random ravel
ravel_multi_index real real_if_close reciprocal remainder repeat require reshape resize
result_type right_shift rint roll rollaxis roots rot90 round round_ row_stack s_ safe_eval save
savetxt savez savez_compressed sctype2char searchsorted select set_printoptions
set_string_function setdiff1d setxor1d shape shares_memory short show_config sign signbit
signedinteger sin sinc single singlecomplex sinh size sometrue sort sort_complex split sqrt
square squeeze stack std subtract sum swapaxes take take_along_axis tan tanh tensordot testing
tile trace transpose trapezoid trapz tri tril tril_indices tril_indices_from trim_zeros triu
triu_indices triu_indices_from true_divide trunc typename typing ubyte ufunc uint uint16 uint32
uint64 uint8 uintc uintp ulong ulonglong union1d unique unique_all unique_counts unique_inverse
unique_values unpackbits unravel_index unsignedinteger unwrap ushort vander var vdot vectorize
vsplit vstack where who zeros zeros_like
""".split())

NDARRAY = frozenset("""
T __abs__ __invert__ __matmul__ __neg__ __pos__ __rmatmul__ all any argmax argmin argpartition
argsort astype base byteswap choose clip compress conj conjugate copy cstruct cumprod cumsum
data device diagonal dot dtype dump dumps fill flags flat flatten get imag item itemsize mT max
mdspan mean min nbytes ndim nonzero partition prod ptp put ravel real reduced_view repeat
reshape round scatter_add scatter_max scatter_min searchsorted set shape size sort squeeze std
strides sum swapaxes take toDlpack tobytes tofile tolist trace transpose var view
""".split())

UFUNC = frozenset("""
accumulate at name nargs nin nout outer reduce reduceat types
""".split())

LINALG = frozenset("""
LinAlgError annotations cholesky cond cross det eig eigh eigvals eigvalsh inv lstsq matmul
matrix_power matrix_rank matrix_transpose norm pinv qr slogdet solve svd tensorinv tensorsolve
""".split())

FFT = frozenset("""
config fft fft2 fftfreq fftn fftshift hfft ifft ifft2 ifftn ifftshift ihfft irfft irfft2 irfftn
rfft rfft2 rfftfreq rfftn
""".split())

RANDOM = frozenset("""
BitGenerator MRG32k3a Philox4x3210 RandomState XORWOW annotations beta binomial bytes chisquare
choice default_rng dirichlet exponential f gamma geometric get_random_state gumbel
hypergeometric laplace logistic lognormal logseries multinomial multivariate_normal
negative_binomial noncentral_chisquare noncentral_f normal pareto permutation poisson power rand
randint randn random random_integers random_sample ranf rayleigh reset_states sample seed
set_random_state shuffle standard_cauchy standard_exponential standard_gamma standard_normal
standard_t triangular uniform vonmises wald weibull zipf
""".split())

RANDOM_STATE = frozenset("""
beta binomial chisquare choice dirichlet exponential f gamma geometric gumbel hypergeometric
laplace logistic lognormal logseries multivariate_normal negative_binomial noncentral_chisquare
noncentral_f normal pareto permutation poisson power rand randint randn random_sample rayleigh
seed shuffle standard_cauchy standard_exponential standard_gamma standard_normal standard_t
tomaxint triangular uniform vonmises wald weibull zipf
""".split())

SPECIAL = frozenset("""
annotations bdtr bdtrc bdtri beta betainc betaincinv betaln binom boxcox boxcox1p btdtr btdtri
cbrt chdtr chdtrc chdtri cosdg cosm1 cotdg digamma ellipeinc ellipj ellipk ellipkinc ellipkm1
entr erf erfc erfcinv erfcx erfinv exp1 exp10 exp2 expi expit expm1 expn exprel fdtr fdtrc fdtri
gamma gammainc gammaincc gammainccinv gammaincinv gammaln gammasgn gdtr gdtrc huber i0 i0e i1
i1e inv_boxcox inv_boxcox1p j0 j1 k0 k0e k1 k1e kl_div lambertw log1p log_expit log_ndtr
log_softmax loggamma logit logsumexp lpmv multigammaln nbdtr nbdtrc nbdtri ndtr ndtri pdtr pdtrc
pdtri poch polygamma pseudo_huber psi radian rel_entr rgamma round shichi sici sinc sindg
softmax sph_harm sph_harm_y spherical_yn tandg wright_bessel xlog1py xlogy y0 y1 yn zeta zetac
""".split())

CUPYX = frozenset("""
DeviceSynchronized GeneralizedUFunc allow_synchronize annotations empty_like_pinned empty_pinned
errstate get_runtime_info geterr linalg optimizing profiler rsqrt scatter_add scatter_max
scatter_min scipy seterr time zeros_like_pinned zeros_pinned
""".split())

# Parameter names of the CuPy 14.2 functions and methods dtrain calls (regenerate from
# ``python tests/emulation/signatures.py`` run against the real package): the NumPy-backed
# emulations accept exactly these keywords, under CuPy's names ("**kwargs": any).
SIGNATURES = {
    "cupy.abs": ('x', 'out', 'casting', 'dtype'),
    "cupy.add": ('x1', 'x2', 'out', 'casting', 'dtype'),
    "cupy.add.at": ('a', 'indices', 'b'),
    "cupy.add.reduceat": ('array', 'indices', 'axis', 'dtype', 'out'),
    "cupy.allclose": ('a', 'b', 'rtol', 'atol', 'equal_nan'),
    "cupy.arange": ('start', 'stop', 'step', 'dtype'),
    "cupy.argmax": ('a', 'axis', 'dtype', 'out', 'keepdims'),
    "cupy.argsort": ('a', 'axis', 'kind'),
    "cupy.array": ('obj', 'dtype', 'copy', 'order', 'subok', 'ndmin', 'blocking'),
    "cupy.asarray": ('a', 'dtype', 'order', 'copy', 'blocking'),
    "cupy.ascontiguousarray": ('a', 'dtype'),
    "cupy.asnumpy": ('a', 'stream', 'order', 'out', 'blocking'),
    "cupy.broadcast_to": ('array', 'shape'),
    "cupy.clip": ('a', 'a_min', 'a_max', 'out'),
    "cupy.concatenate": ('tup', 'axis', 'out', 'dtype', 'casting'),
    "cupy.copysign": ('x1', 'x2', 'out', 'casting', 'dtype'),
    "cupy.copyto": ('dst', 'src', 'casting', 'where'),
    "cupy.cos": ('x', 'out', 'casting', 'dtype'),
    "cupy.cosh": ('x', 'out', 'casting', 'dtype'),
    "cupy.cuda.Device": ('device',),
    "cupy.cuda.Device.synchronize": (),
    "cupy.cuda.Device.use": (),
    "cupy.cuda.Event": ('block', 'disable_timing', 'interprocess'),
    "cupy.cuda.Event.record": ('stream',),
    "cupy.cuda.Event.synchronize": (),
    "cupy.cuda.MemoryPool.free_all_blocks": ('stream',),
    "cupy.cuda.MemoryPool.total_bytes": (),
    "cupy.cuda.MemoryPool.used_bytes": (),
    "cupy.cuda.PinnedMemoryPool.free_all_blocks": (),
    "cupy.cuda.Stream": ('null', 'non_blocking', 'ptds', 'priority'),
    "cupy.cuda.Stream.synchronize": (),
    "cupy.cuda.Stream.wait_event": ('event',),
    "cupy.cuda.get_current_stream": ('device_id',),
    "cupy.cuda.nccl.NcclCommunicator": ('ndev', 'commId', 'rank', 'config'),
    "cupy.cuda.nccl.NcclCommunicator.allGather": ('sendbuf', 'recvbuf', 'count', 'datatype', 'stream'),
    "cupy.cuda.nccl.NcclCommunicator.allReduce": ('sendbuf', 'recvbuf', 'count', 'datatype', 'op', 'stream'),
    "cupy.cuda.nccl.NcclCommunicator.bcast": ('buff', 'count', 'datatype', 'root', 'stream'),
    "cupy.cuda.nccl.NcclCommunicator.destroy": (),
    "cupy.cuda.nccl.NcclCommunicator.recv": ('recvbuf', 'count', 'datatype', 'peer', 'stream'),
    "cupy.cuda.nccl.NcclCommunicator.reduce": ('sendbuf', 'recvbuf', 'count', 'datatype', 'op', 'root', 'stream'),
    "cupy.cuda.nccl.NcclCommunicator.reduceScatter": ('sendbuf', 'recvbuf', 'recvcount', 'datatype', 'op', 'stream'),
    "cupy.cuda.nccl.NcclCommunicator.send": ('sendbuf', 'count', 'datatype', 'peer', 'stream'),
    "cupy.cuda.nccl.get_unique_id": (),
    "cupy.cuda.nccl.groupEnd": (),
    "cupy.cuda.nccl.groupStart": (),
    "cupy.cuda.runtime.getDeviceCount": (),
    "cupy.cuda.runtime.getDeviceProperties": ('device',),
    "cupy.cumprod": ('a', 'axis', 'dtype', 'out'),
    "cupy.cumsum": ('a', 'axis', 'dtype', 'out'),
    "cupy.diagonal": ('a', 'offset', 'axis1', 'axis2'),
    "cupy.diff": ('a', 'n', 'axis', 'prepend', 'append'),
    "cupy.divide": ('x1', 'x2', 'out', 'casting', 'dtype'),
    "cupy.einsum": ('**kwargs',),
    "cupy.empty": ('shape', 'dtype', 'order'),
    "cupy.empty_like": ('prototype', 'dtype', 'order', 'subok', 'shape'),
    "cupy.equal": ('x1', 'x2', 'out', 'casting', 'dtype'),
    "cupy.exp": ('x', 'out', 'casting', 'dtype'),
    "cupy.expand_dims": ('a', 'axis'),
    "cupy.eye": ('N', 'M', 'k', 'dtype', 'order'),
    "cupy.flatnonzero": ('a',),
    "cupy.flip": ('a', 'axis'),
    "cupy.floor": ('x', 'out', 'casting', 'dtype'),
    "cupy.full": ('shape', 'fill_value', 'dtype', 'order'),
    "cupy.get_default_memory_pool": (),
    "cupy.get_default_pinned_memory_pool": (),
    "cupy.greater": ('x1', 'x2', 'out', 'casting', 'dtype'),
    "cupy.isclose": ('a', 'b', 'rtol', 'atol', 'equal_nan'),
    "cupy.isfinite": ('x', 'out', 'casting', 'dtype'),
    "cupy.isnan": ('x', 'out', 'casting', 'dtype'),
    "cupy.lexsort": ('keys',),
    "cupy.lib.stride_tricks.as_strided": ('x', 'shape', 'strides'),
    "cupy.linalg.norm": ('x', 'ord', 'axis', 'keepdims'),
    "cupy.linspace": ('start', 'stop', 'num', 'endpoint', 'retstep', 'dtype', 'axis'),
    "cupy.log": ('x', 'out', 'casting', 'dtype'),
    "cupy.log1p": ('x', 'out', 'casting', 'dtype'),
    "cupy.logaddexp": ('x1', 'x2', 'out', 'casting', 'dtype'),
    "cupy.matmul": ('axes', 'axis', 'keepdims', 'casting', 'dtype', 'signature', 'order', 'out'),
    "cupy.max": ('a', 'axis', 'out', 'keepdims'),
    "cupy.maximum": ('x1', 'x2', 'out', 'casting', 'dtype'),
    "cupy.minimum": ('x1', 'x2', 'out', 'casting', 'dtype'),
    "cupy.moveaxis": ('a', 'source', 'destination'),
    "cupy.multiply": ('x1', 'x2', 'out', 'casting', 'dtype'),
    "cupy.ndarray.astype": ('dtype', 'order', 'casting', 'subok', 'copy'),
    "cupy.ndarray.copy": ('order',),
    "cupy.ndarray.get": ('stream', 'order', 'out', 'blocking'),
    "cupy.ndarray.item": (),
    "cupy.ndarray.reshape": ('shape', 'order', 'copy'),
    "cupy.ndarray.tolist": (),
    "cupy.ndarray.view": ('dtype', 'type'),
    "cupy.negative": ('x', 'out', 'casting', 'dtype'),
    "cupy.nonzero": ('a',),
    "cupy.ones": ('shape', 'dtype', 'order'),
    "cupy.pad": ('array', 'pad_width', 'mode', '**kwargs'),
    "cupy.random.RandomState": ('seed', 'method'),
    "cupy.random.RandomState.permutation": ('a',),
    "cupy.random.RandomState.randint": ('low', 'high', 'size', 'dtype'),
    "cupy.random.RandomState.random_sample": ('size', 'dtype'),
    "cupy.random.RandomState.standard_normal": ('size', 'dtype'),
    "cupy.reciprocal": ('x', 'out', 'casting', 'dtype'),
    "cupy.repeat": ('a', 'repeats', 'axis'),
    "cupy.roll": ('a', 'shift', 'axis'),
    "cupy.searchsorted": ('a', 'v', 'side', 'sorter'),
    "cupy.sign": ('x', 'out', 'casting', 'dtype'),
    "cupy.sin": ('x', 'out', 'casting', 'dtype'),
    "cupy.sinh": ('x', 'out', 'casting', 'dtype'),
    "cupy.sqrt": ('x', 'out', 'casting', 'dtype'),
    "cupy.stack": ('tup', 'axis', 'out', 'dtype', 'casting'),
    "cupy.subtract": ('x1', 'x2', 'out', 'casting', 'dtype'),
    "cupy.take_along_axis": ('a', 'indices', 'axis'),
    "cupy.tanh": ('x', 'out', 'casting', 'dtype'),
    "cupy.tile": ('A', 'reps'),
    "cupy.tril": ('m', 'k'),
    "cupy.triu": ('m', 'k'),
    "cupy.unique": ('ar', 'return_index', 'return_inverse', 'return_counts', 'axis', 'equal_nan'),
    "cupy.where": ('condition', 'x', 'y'),
    "cupy.zeros": ('shape', 'dtype', 'order'),
    "cupy.zeros_like": ('a', 'dtype', 'order', 'subok', 'shape'),
    "cupyx.scatter_add": ('a', 'slices', 'value'),
}
