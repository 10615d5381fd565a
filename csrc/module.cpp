// The Python binding of the compute core: tinyconv._core (private; wrapped by tinyconv.functional).
//
// Every entry point validates all of its arguments before touching memory: dtype (float32 or
// float64, the same for all arrays; the Python layer converts), C-contiguity, ndim, shapes,
// stride >= 1, pad >= 0, window inside the padded input, and sizes whose products would overflow.
// Errors: TypeError for dtypes/layout, ValueError for values and shapes, MemoryError for sizes that
// cannot be allocated. The GIL is released while a kernel runs.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <array>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <initializer_list>
#include <limits>
#include <sstream>
#include <string>
#include <tuple>
#include <type_traits>
#include <utility>
#include <vector>

#if defined(__unix__) || defined(__APPLE__)
#include <unistd.h>
#endif

#include "activation.h"
#include "affine.h"
#include "batchnorm.h"
#include "conv.h"
#include "gemm.h"
#include "im2col.h"
#include "loss.h"
#include "optimizer.h"
#include "parallel.h"
#include "pool.h"

namespace py = pybind11;
using namespace tinyconv;

namespace {

// ---------------------------------------------------------------------------------------------
// Validation helpers

template <typename... Args>
std::string cat(const Args&... args) {
    std::ostringstream out;
    (out << ... << args);
    return out.str();
}

std::string shape_str(const py::array& a) {
    std::ostringstream out;
    out << "(";
    for (py::ssize_t i = 0; i < a.ndim(); ++i) out << (i ? ", " : "") << a.shape(i);
    out << (a.ndim() == 1 ? ",)" : ")");
    return out.str();
}

[[noreturn]] void value_error(const std::string& msg) { throw py::value_error(msg); }
[[noreturn]] void type_error(const std::string& msg) { throw py::type_error(msg); }

[[noreturn]] void memory_error(const std::string& msg) {
    PyErr_SetString(PyExc_MemoryError, msg.c_str());
    throw py::error_already_set();
}

// The product of sizes >= 0 into `out`; false when it does not fit in 63 bits.
bool product_fits(std::initializer_list<index_t> sizes, index_t& out) {
    index_t total = 1;
    for (index_t v : sizes) {
        if (v != 0 && total > std::numeric_limits<index_t>::max() / v) return false;
        total *= v;
    }
    out = total;
    return true;
}

// The product of sizes, or MemoryError when it does not fit in 63 bits.
index_t mul(std::initializer_list<index_t> sizes) {
    index_t total;
    if (!product_fits(sizes, total)) {
        std::ostringstream factors;
        for (index_t f : sizes) factors << (factors.tellp() > 0 ? " * " : "") << f;
        memory_error(cat("an array of ", factors.str(), " elements is too large to address"));
    }
    return total;
}

template <typename... Sizes>
index_t mul(Sizes... sizes) {
    return mul({static_cast<index_t>(sizes)...});
}

bool native_order(const py::array& a) {
    const char order = a.dtype().byteorder();
    if (order == '=' || order == '|') return true;
    const std::uint16_t probe = 1;
    const bool little = *reinterpret_cast<const unsigned char*>(&probe) == 1;
    return order == (little ? '<' : '>');
}

// int64, native order, C-contiguous: the index arrays (argmax, labels).
void check_int64(const py::array& a, const char* name) {
    if (a.dtype().kind() != 'i' || a.dtype().itemsize() != 8 || !native_order(a) ||
        !(a.flags() & py::array::c_style) ||
        reinterpret_cast<std::uintptr_t>(a.data()) % alignof(std::int64_t) != 0)
        type_error(cat(
            name, " must be a C-contiguous, aligned int64 array in native byte order, got dtype ",
            std::string(py::str(a.dtype()))));
}

// Checks dtype and layout; returns the element type code ('f' float32, 'd' float64).
char float_kind(const py::array& a, const char* name) {
    const char kind = a.dtype().kind();
    const auto size = a.dtype().itemsize();
    if (kind != 'f' || (size != 4 && size != 8))
        type_error(cat(name, " must be a float32 or float64 array, got dtype ",
                       std::string(py::str(a.dtype()))));
    if (!native_order(a))
        type_error(cat(name, " must be in native byte order, got dtype ",
                       std::string(py::str(a.dtype()))));
    if (!(a.flags() & py::array::c_style) || reinterpret_cast<std::uintptr_t>(a.data()) % size != 0)
        type_error(cat(
            name, " must be C-contiguous and aligned (tinyconv.functional converts it for you)"));
    return size == 4 ? 'f' : 'd';
}

void same_kind(const py::array& a, const char* an, const py::array& b, const char* bn) {
    if (float_kind(a, an) != float_kind(b, bn))
        type_error(cat(an, " and ", bn, " must have the same dtype, got ",
                       std::string(py::str(a.dtype())), " and ", std::string(py::str(b.dtype()))));
}

void check_ndim(const py::array& a, const char* name, py::ssize_t ndim) {
    if (a.ndim() != ndim)
        value_error(cat(name, " must be ", ndim, "-dimensional, got shape ", shape_str(a)));
}

void check_shape(const py::array& a, const char* name, const std::vector<index_t>& want) {
    bool ok = a.ndim() == static_cast<py::ssize_t>(want.size());
    for (size_t i = 0; ok && i < want.size(); ++i) ok = a.shape(i) == want[i];
    if (!ok) {
        std::ostringstream w;
        w << "(";
        for (size_t i = 0; i < want.size(); ++i) w << (i ? ", " : "") << want[i];
        w << (want.size() == 1 ? ",)" : ")");
        value_error(cat(name, " must have shape ", w.str(), ", got ", shape_str(a)));
    }
}

// ---------------------------------------------------------------------------------------------
// Argument conversion. Every entry point receives its arguments as plain Python objects and
// converts each one here, by name (see def_checked below): pybind11's own conversions report a
// wrong type only as "incompatible function arguments" and an int too large for a double
// not at all helpfully, and an optional array taken as py::object and reinterpreted without a
// check makes the binding read a str or a list as if it were an ndarray (a segfault).

// The value for a message: its type and its repr, cut to 80 characters.
std::string describe(const py::handle& value) {
    std::string text;
    try {
        text = py::repr(value).cast<std::string>();
    } catch (const py::error_already_set&) {
        text = "<unprintable>";
    }
    if (text.size() > 80) text = text.substr(0, 77) + "...";
    return cat(Py_TYPE(value.ptr())->tp_name, " ", text);
}

// NumPy's scalar types that Python's own checks do not cover, looked up once. Stored for the
// life of the process (never destroyed: that would happen after the interpreter is gone).
struct NumpyScalarTypes {
    py::object bool_, complexfloating;
};
const NumpyScalarTypes& numpy_scalar_types() {
    PYBIND11_CONSTINIT static py::gil_safe_call_once_and_store<NumpyScalarTypes> storage;
    return storage
        .call_once_and_store_result([] {
            py::module_ np = py::module_::import("numpy");
            return NumpyScalarTypes{np.attr("bool_"), np.attr("complexfloating")};
        })
        .get_stored();
}

bool is_bool(const py::handle& value) {
    return PyBool_Check(value.ptr()) || py::isinstance(value, numpy_scalar_types().bool_);
}

py::array to_array(const py::handle& value, const char* name) {
    if (!py::isinstance<py::array>(value))
        type_error(cat(name, " must be a numpy.ndarray, got ", describe(value)));
    return py::reinterpret_borrow<py::array>(value);
}

// An int (Python or NumPy; not a bool, which is almost always a slip) that fits in 64 bits.
index_t to_index(const py::handle& value, const char* name) {
    if (is_bool(value) || PyFloat_Check(value.ptr()))
        type_error(cat(name, " must be an int, got ", describe(value)));
    PyObject* as_int =
        PyNumber_Index(value.ptr());  // int, NumPy integer or anything with __index__
    if (!as_int) {
        PyErr_Clear();
        type_error(cat(name, " must be an int, got ", describe(value)));
    }
    int overflow = 0;
    const long long v = PyLong_AsLongLongAndOverflow(as_int, &overflow);
    Py_DECREF(as_int);
    if (overflow != 0) value_error(cat(name, " must fit in 64 bits, got ", describe(value)));
    if (v == -1 && PyErr_Occurred()) throw py::error_already_set();
    return static_cast<index_t>(v);
}

// A real number as a double: a float, an int or a NumPy real scalar (anything with __float__ or
// __index__), but not a bool, a complex number or a string. An int too large for a double (say
// 10**400) is a ValueError, not Python's OverflowError.
double to_real(const py::handle& value, const char* name) {
    bool real = !is_bool(value) && !PyComplex_Check(value.ptr()) &&
                !py::isinstance(value, numpy_scalar_types().complexfloating);
    if (real && py::isinstance<py::array>(
                    value)) {  // a 0-d array of a real dtype passes, as NumPy's scalars do
        const py::array a = py::reinterpret_borrow<py::array>(value);
        real = a.ndim() == 0 && std::string("iuf").find(a.dtype().kind()) != std::string::npos;
    }
    if (!real) type_error(cat(name, " must be a real number, got ", describe(value)));
    const double v = PyFloat_AsDouble(value.ptr());
    if (v == -1.0 && PyErr_Occurred()) {
        const bool overflow = PyErr_ExceptionMatches(PyExc_OverflowError);
        PyErr_Clear();
        if (overflow) value_error(cat(name, " is too large for a float64: ", describe(value)));
        type_error(cat(name, " must be a real number, got ", describe(value)));
    }
    return v;
}

bool to_bool(const py::handle& value, const char* name) {
    if (!is_bool(value)) type_error(cat(name, " must be a bool, got ", describe(value)));
    return PyObject_IsTrue(value.ptr()) == 1;
}

// How a parameter of the C++ type T is made from the Python object passed for it.
template <typename T>
struct FromPython;
template <>
struct FromPython<py::array> {
    static py::array convert(const py::object& v, const char* name) { return to_array(v, name); }
};
template <>
struct FromPython<py::object> {  // None or an array: checked by the entry point (see
                                 // optional_array)
    static py::object convert(const py::object& v, const char*) { return v; }
};
template <>
struct FromPython<index_t> {
    static index_t convert(const py::object& v, const char* name) { return to_index(v, name); }
};
template <>
struct FromPython<double> {
    static double convert(const py::object& v, const char* name) { return to_real(v, name); }
};
template <>
struct FromPython<bool> {
    static bool convert(const py::object& v, const char* name) { return to_bool(v, name); }
};
template <>
struct FromPython<std::string> {
    static std::string convert(const py::object& v, const char* name) {
        if (!py::isinstance<py::str>(v)) type_error(cat(name, " must be a str, got ", describe(v)));
        return v.cast<std::string>();
    }
};

template <typename T>
using Loose = const py::object&;  // every parameter arrives as a Python object

template <typename Ret, typename... Params, std::size_t... I>
auto checked(Ret (*fn)(Params...), std::array<const char*, sizeof...(Params)> names,
             std::index_sequence<I...>) {
    return [fn, names](Loose<Params>... values) -> Ret {
        // A braced list converts left to right, so the first bad argument is the one reported.
        std::tuple<std::decay_t<Params>...> converted{
            FromPython<std::decay_t<Params>>::convert(values, names[I])...};
        return std::apply(fn, std::move(converted));
    };
}

// scope.def(name, fn, args...), with every argument converted by name as above first.
template <typename Ret, typename... Params, typename... Args>
void def_checked(py::module_& scope, const char* name, Ret (*fn)(Params...), const Args&... args) {
    static_assert(sizeof...(Params) == sizeof...(Args), "one py::arg per parameter");
    const std::array<const char*, sizeof...(Params)> names{{args.name...}};
    scope.def(name, checked(fn, names, std::index_sequence_for<Params...>{}), args...);
}

// An optional array argument: None, or an ndarray (anything else is a TypeError naming it).
bool optional_array(const py::object& value, const char* name, py::array& out) {
    if (value.is_none()) return false;
    out = to_array(value, name);
    return true;
}

// Bounds every scalar size so that the products below cannot overflow unnoticed.
constexpr index_t kMaxDim = index_t(1) << 40;

struct Nchw {
    index_t n, c, h, w;
};

// The window of a convolution, pooling or im2col over an (N, C, H, W) input, checked: window >= 1,
// stride >= 1, pad >= 0, each at most 2**40; the window inside the padded input; and the unfolded
// size N*C*OH*OW*FH*FW (the im2col matrix; the work of a pooling) inside 64 bits, with N counted
// as at least 1 so that an empty batch is held to the same geometry. Every size product a kernel
// forms (the window area FH*FW an average divides by, a plane's taps, a thread's share of them)
// divides that one, so none of them can overflow.
Window2d make_window(const Nchw& s, index_t fh, index_t fw, index_t sh, index_t sw, index_t ph,
                     index_t pw, const char* window_name) {
    if (fh < 1 || fw < 1) value_error(cat(window_name, " must be >= 1, got (", fh, ", ", fw, ")"));
    if (sh < 1 || sw < 1) value_error(cat("stride must be >= 1, got (", sh, ", ", sw, ")"));
    if (ph < 0 || pw < 0) value_error(cat("pad must be >= 0, got (", ph, ", ", pw, ")"));
    if (fh > kMaxDim || fw > kMaxDim || sh > kMaxDim || sw > kMaxDim || ph > kMaxDim ||
        pw > kMaxDim)
        value_error(cat(window_name, "/stride/pad are absurdly large: window (", fh, ", ", fw,
                        "), stride (", sh, ", ", sw, "), pad (", ph, ", ", pw, ")"));
    const index_t h = s.h, w = s.w;
    if (fh > h + 2 * ph || fw > w + 2 * pw)
        value_error(cat(window_name, " (", fh, ", ", fw, ") is larger than the padded input (",
                        h + 2 * ph, ", ", w + 2 * pw, ") = input (", h, ", ", w, ") + 2 * pad (",
                        ph, ", ", pw, ")"));
    const Window2d g{h, w, fh, fw, sh, sw, ph, pw};
    index_t unfolded;
    if (!product_fits({std::max<index_t>(s.n, 1), s.c, g.oh(), g.ow(), fh, fw}, unfolded))
        value_error(cat(window_name, " (", fh, ", ", fw, ") with stride (", sh, ", ", sw,
                        ") and pad (", ph, ", ", pw, ") over an input of shape (", s.n, ", ", s.c,
                        ", ", h, ", ", w,
                        ") is too large: N*C*OH*OW*FH*FW = ", std::max<index_t>(s.n, 1), "*", s.c,
                        "*", g.oh(), "*", g.ow(), "*", fh, "*", fw, " overflows 64 bits"));
    return g;
}

// Allocates a C-contiguous output array of the given shape and element type.
// Physical memory of this machine in bytes (0 when unknown).
double physical_memory_bytes() {
#if defined(_SC_PHYS_PAGES) && defined(_SC_PAGESIZE)
    const long pages = sysconf(_SC_PHYS_PAGES), page = sysconf(_SC_PAGESIZE);
    if (pages > 0 && page > 0) return static_cast<double>(pages) * static_cast<double>(page);
#endif
    return 0.0;
}

// MemoryError, before anything is allocated, for a request larger than the machine's memory: the
// OS may promise such an allocation and then kill the process when it is touched.
void check_affordable(double bytes, const char* what) {
    static const double limit = physical_memory_bytes();
    if (limit > 0 && bytes > limit) {
        memory_error(cat(what, " would need ", bytes / (1 << 30), " GiB, more than the ",
                         limit / (1 << 30), " GiB of memory of this machine"));
    }
}

template <typename T>
py::array_t<T> empty(const std::vector<index_t>& shape) {
    index_t total = 1;
    for (index_t d : shape) total = mul(total, d);
    check_affordable(static_cast<double>(total) * sizeof(T), "the output array");
    return py::array_t<T>(std::vector<py::ssize_t>(shape.begin(), shape.end()));
}

template <typename T>
T* ptr(py::array a) {  // by value: a new reference to the same array
    return static_cast<T*>(a.mutable_data());
}
template <typename T>
const T* cptr(const py::array& a) {
    return static_cast<const T*>(a.data());
}

// Calls f(T{}) with T = float or double according to kind.
template <typename F>
auto dispatch(char kind, F&& f) {
    if (kind == 'f') return f(float{});
    return f(double{});
}

Nchw nchw(const py::array& x, const char* name) {
    check_ndim(x, name, 4);
    Nchw s{x.shape(0), x.shape(1), x.shape(2), x.shape(3)};
    if (s.c < 1 || s.h < 1 || s.w < 1)
        value_error(cat(name, " must have C, H, W >= 1, got shape ", shape_str(x)));
    return s;
}

Nchw nchw_from_ints(index_t n, index_t c, index_t h, index_t w) {
    if (n < 0 || c < 1 || h < 1 || w < 1)
        value_error(cat("input_shape must be (N, C, H, W) with N >= 0 and C, H, W >= 1, got (", n,
                        ", ", c, ", ", h, ", ", w, ")"));
    if (n > kMaxDim || c > kMaxDim || h > kMaxDim || w > kMaxDim)
        value_error(cat("input_shape entries must be at most 2**40, got (", n, ", ", c, ", ", h,
                        ", ", w, ")"));
    mul(n, c, h, w);
    return Nchw{n, c, h, w};
}

// ---------------------------------------------------------------------------------------------
// Entry points

template <bool Reference>
py::array py_gemm(const py::array& a, const py::array& b, const py::object& c_obj, double alpha,
                  double beta, bool trans_a, bool trans_b) {
    check_ndim(a, "a", 2);
    check_ndim(b, "b", 2);
    same_kind(a, "a", b, "b");
    const index_t m = trans_a ? a.shape(1) : a.shape(0), k = trans_a ? a.shape(0) : a.shape(1);
    const index_t kb = trans_b ? b.shape(1) : b.shape(0), n = trans_b ? b.shape(0) : b.shape(1);
    if (k != kb)
        value_error(cat("a and b do not multiply: op(a) is (", m, ", ", k, ") and op(b) is (", kb,
                        ", ", n, ")"));
    py::array out, c;
    const char kind = float_kind(a, "a");
    if (!optional_array(c_obj, "c", c)) {
        if (beta != 0.0) value_error(cat("beta must be 0 when c is None, got ", beta));
        out = dispatch(kind, [&](auto t) -> py::array { return empty<decltype(t)>({m, n}); });
    } else {
        check_ndim(c, "c", 2);
        same_kind(a, "a", c, "c");
        check_shape(c, "c", {m, n});
        out = py::array(c.dtype(), c.request().shape);
        std::memcpy(out.mutable_data(), c.data(), static_cast<size_t>(c.nbytes()));
    }
    dispatch(kind, [&](auto t) {
        using T = decltype(t);
        T* cp = ptr<T>(out);
        const T* ap = cptr<T>(a);
        const T* bp = cptr<T>(b);
        py::gil_scoped_release release;
        if constexpr (Reference)
            gemm_reference<T>(cp, n, ap, a.shape(1), trans_a, bp, b.shape(1), trans_b, m, n, k,
                              T(alpha), T(beta));
        else
            gemm<T>(cp, n, ap, a.shape(1), trans_a, bp, b.shape(1), trans_b, m, n, k, T(alpha),
                    T(beta), num_threads());
        return 0;
    });
    return out;
}

template <bool Reference>
py::array py_im2col(const py::array& x, index_t fh, index_t fw, index_t sh, index_t sw, index_t ph,
                    index_t pw) {
    const Nchw s = nchw(x, "input_data");
    const Window2d g = make_window(s, fh, fw, sh, sw, ph, pw, "filter (filter_h, filter_w)");
    return dispatch(float_kind(x, "input_data"), [&](auto t) -> py::array {
        using T = decltype(t);
        py::array col = empty<T>({mul(s.n, g.oh(), g.ow()), mul(s.c, fh, fw)});
        T* cp = ptr<T>(col);
        const T* xp = cptr<T>(x);
        py::gil_scoped_release release;
        if constexpr (Reference)
            im2col_reference<T>(cp, xp, s.n, s.c, g);
        else
            im2col<T>(cp, xp, s.n, s.c, g);
        return col;
    });
}

template <bool Reference>
py::array py_col2im(const py::array& col, index_t n, index_t c, index_t h, index_t w, index_t fh,
                    index_t fw, index_t sh, index_t sw, index_t ph, index_t pw) {
    const Nchw s = nchw_from_ints(n, c, h, w);
    const Window2d g = make_window(s, fh, fw, sh, sw, ph, pw, "filter (filter_h, filter_w)");
    check_ndim(col, "col", 2);
    check_shape(col, "col", {mul(s.n, g.oh(), g.ow()), mul(s.c, fh, fw)});
    return dispatch(float_kind(col, "col"), [&](auto t) -> py::array {
        using T = decltype(t);
        py::array img = empty<T>({s.n, s.c, s.h, s.w});
        T* ip = ptr<T>(img);
        const T* cp = cptr<T>(col);
        py::gil_scoped_release release;
        if constexpr (Reference)
            col2im_reference<T>(ip, cp, s.n, s.c, g);
        else
            col2im<T>(ip, cp, s.n, s.c, g);
        return img;
    });
}

struct ConvShapes {
    Nchw x;
    index_t fn;
    Window2d g;
};

ConvShapes conv_shapes(const py::array& x, const py::array& W, index_t sh, index_t sw, index_t ph,
                       index_t pw) {
    const Nchw s = nchw(x, "x");
    check_ndim(W, "W", 4);
    same_kind(x, "x", W, "W");
    if (W.shape(0) < 1)
        value_error(cat("W must have at least one filter, got shape ", shape_str(W)));
    if (W.shape(1) != s.c)
        value_error(cat("W has ", W.shape(1), " input channels but x has ", s.c, ": W shape ",
                        shape_str(W), ", x shape ", shape_str(x)));
    const Window2d g =
        make_window(s, W.shape(2), W.shape(3), sh, sw, ph, pw, "filter (FH, FW) of W");
    mul(s.n, W.shape(0), g.oh(), g.ow());
    // Each thread holds one image's column matrix (two in the backward pass).
    const index_t col = mul(s.c, g.fh, g.fw, g.oh(), g.ow());
    check_affordable(2.0 * static_cast<double>(col) * x.dtype().itemsize() * num_threads(),
                     "the per-thread im2col workspace");
    return ConvShapes{s, W.shape(0), g};
}

template <bool Reference>
py::array py_conv2d_forward(const py::array& x, const py::array& W, const py::array& b, index_t sh,
                            index_t sw, index_t ph, index_t pw, bool relu) {
    const ConvShapes cs = conv_shapes(x, W, sh, sw, ph, pw);
    same_kind(x, "x", b, "b");
    check_shape(b, "b", {cs.fn});
    return dispatch(float_kind(x, "x"), [&](auto t) -> py::array {
        using T = decltype(t);
        py::array y = empty<T>({cs.x.n, cs.fn, cs.g.oh(), cs.g.ow()});
        T* yp = ptr<T>(y);
        const T *xp = cptr<T>(x), *wp = cptr<T>(W), *bp = cptr<T>(b);
        py::gil_scoped_release release;
        if constexpr (Reference) {
            conv2d_forward_reference<T>(yp, xp, wp, bp, cs.x.n, cs.x.c, cs.fn, cs.g);
            if (relu)
                for (index_t i = 0, size = static_cast<index_t>(y.size()); i < size; ++i)
                    yp[i] = yp[i] <= T(0) ? T(0) : yp[i];
        } else {
            conv2d_forward<T>(yp, xp, wp, bp, cs.x.n, cs.x.c, cs.fn, cs.g, relu);
        }
        return y;
    });
}

template <bool Reference>
py::tuple py_conv2d_backward(const py::array& dout, const py::array& x, const py::array& W,
                             index_t sh, index_t sw, index_t ph, index_t pw, bool need_dx) {
    const ConvShapes cs = conv_shapes(x, W, sh, sw, ph, pw);
    same_kind(x, "x", dout, "dout");
    check_shape(dout, "dout", {cs.x.n, cs.fn, cs.g.oh(), cs.g.ow()});
    return dispatch(float_kind(x, "x"), [&](auto t) -> py::tuple {
        using T = decltype(t);
        py::object dx = py::none();
        if (need_dx || Reference) dx = empty<T>({cs.x.n, cs.x.c, cs.x.h, cs.x.w});
        py::array dw = empty<T>({cs.fn, cs.x.c, cs.g.fh, cs.g.fw});
        py::array db = empty<T>({cs.fn});
        T* dxp = dx.is_none() ? nullptr : ptr<T>(py::reinterpret_borrow<py::array>(dx));
        T *dwp = ptr<T>(dw), *dbp = ptr<T>(db);
        const T *dp = cptr<T>(dout), *xp = cptr<T>(x), *wp = cptr<T>(W);
        {
            py::gil_scoped_release release;
            if constexpr (Reference)
                conv2d_backward_reference<T>(dxp, dwp, dbp, dp, xp, wp, cs.x.n, cs.x.c, cs.fn,
                                             cs.g);
            else
                conv2d_backward<T>(dxp, dwp, dbp, dp, xp, wp, cs.x.n, cs.x.c, cs.fn, cs.g);
        }
        return py::make_tuple(dx, dw, db);
    });
}

Window2d pool_window(const Nchw& s, index_t pool_h, index_t pool_w, index_t sh, index_t sw,
                     index_t ph, index_t pw) {
    return make_window(s, pool_h, pool_w, sh, sw, ph, pw, "pool (pool_h, pool_w)");
}

// Max pooling also needs a real input in every window: pad < pool.
Window2d max_pool_window(const Nchw& s, index_t pool_h, index_t pool_w, index_t sh, index_t sw,
                         index_t ph, index_t pw) {
    const Window2d g = pool_window(s, pool_h, pool_w, sh, sw, ph, pw);
    if (ph >= pool_h || pw >= pool_w)
        value_error(cat("pad (", ph, ", ", pw, ") must be smaller than the pool (", pool_h, ", ",
                        pool_w, ") for max pooling: a window made only of padding has no maximum"));
    return g;
}

template <bool Reference>
py::tuple py_max_pool2d_forward(const py::array& x, index_t pool_h, index_t pool_w, index_t sh,
                                index_t sw, index_t ph, index_t pw, bool with_argmax) {
    const Nchw s = nchw(x, "x");
    const Window2d g = max_pool_window(s, pool_h, pool_w, sh, sw, ph, pw);
    return dispatch(float_kind(x, "x"), [&](auto t) -> py::tuple {
        using T = decltype(t);
        py::array y = empty<T>({s.n, s.c, g.oh(), g.ow()});
        py::object idx = py::none();
        if (with_argmax || Reference) idx = empty<std::int64_t>({s.n, s.c, g.oh(), g.ow()});
        T* yp = ptr<T>(y);
        std::int64_t* ip =
            idx.is_none() ? nullptr : ptr<std::int64_t>(py::reinterpret_borrow<py::array>(idx));
        const T* xp = cptr<T>(x);
        {
            py::gil_scoped_release release;
            if constexpr (Reference)
                max_pool2d_forward_reference<T>(yp, ip, xp, s.n, s.c, g);
            else
                max_pool2d_forward<T>(yp, ip, xp, s.n, s.c, g);
        }
        return py::make_tuple(y, idx);
    });
}

// Inference's fused convolution (+ ReLU) + max pooling: y is the pooled output. The reference
// runs the three reference passes one after the other (and is the oracle).
template <bool Reference>
py::array py_conv2d_max_pool_forward(const py::array& x, const py::array& W, const py::array& b,
                                     index_t sh, index_t sw, index_t ph, index_t pw, bool relu,
                                     index_t pool_h, index_t pool_w, index_t pool_sh,
                                     index_t pool_sw, index_t pool_ph, index_t pool_pw) {
    const ConvShapes cs = conv_shapes(x, W, sh, sw, ph, pw);
    same_kind(x, "x", b, "b");
    check_shape(b, "b", {cs.fn});
    const Nchw conv_out{cs.x.n, cs.fn, cs.g.oh(), cs.g.ow()};
    const Window2d pool =
        max_pool_window(conv_out, pool_h, pool_w, pool_sh, pool_sw, pool_ph, pool_pw);
    return dispatch(float_kind(x, "x"), [&](auto t) -> py::array {
        using T = decltype(t);
        py::array y = empty<T>({cs.x.n, cs.fn, pool.oh(), pool.ow()});
        T* yp = ptr<T>(y);
        const T *xp = cptr<T>(x), *wp = cptr<T>(W), *bp = cptr<T>(b);
        py::gil_scoped_release release;
        if constexpr (Reference) {
            std::vector<T> full(static_cast<size_t>(mul(cs.x.n, cs.fn, cs.g.oh(), cs.g.ow())));
            std::vector<std::int64_t> argmax(static_cast<size_t>(y.size()));
            conv2d_forward_reference<T>(full.data(), xp, wp, bp, cs.x.n, cs.x.c, cs.fn, cs.g);
            if (relu)
                for (T& v : full) v = v <= T(0) ? T(0) : v;
            max_pool2d_forward_reference<T>(yp, argmax.data(), full.data(), cs.x.n, cs.fn, pool);
        } else {
            conv2d_max_pool_forward<T>(yp, xp, wp, bp, cs.x.n, cs.x.c, cs.fn, cs.g, relu, pool);
        }
        return y;
    });
}

py::array py_max_pool2d_backward_from_input(const py::array& dout, const py::array& x,
                                            index_t pool_h, index_t pool_w, index_t sh, index_t sw,
                                            index_t ph, index_t pw, bool through_relu) {
    const Nchw s = nchw(x, "x");
    const Window2d g = max_pool_window(s, pool_h, pool_w, sh, sw, ph, pw);
    same_kind(x, "x", dout, "dout");
    check_shape(dout, "dout", {s.n, s.c, g.oh(), g.ow()});
    return dispatch(float_kind(x, "x"), [&](auto t) -> py::array {
        using T = decltype(t);
        py::array dx = empty<T>({s.n, s.c, s.h, s.w});
        T* dxp = ptr<T>(dx);
        const T *dp = cptr<T>(dout), *xp = cptr<T>(x);
        py::gil_scoped_release release;
        max_pool2d_backward_from_input<T>(dxp, dp, xp, s.n, s.c, g, through_relu);
        return dx;
    });
}

py::array py_max_pool2d_backward(const py::array& dout, const py::array& argmax, index_t n,
                                 index_t c, index_t h, index_t w, const py::object& relu_output) {
    const Nchw s = nchw_from_ints(n, c, h, w);
    check_ndim(dout, "dout", 4);
    const char kind = float_kind(dout, "dout");
    if (dout.shape(0) != s.n || dout.shape(1) != s.c)
        value_error(cat("dout shape ", shape_str(dout), " does not match input_shape (", n, ", ", c,
                        ", ", h, ", ", w, ") in N and C"));
    check_int64(argmax, "argmax");
    check_shape(argmax, "argmax", {dout.shape(0), dout.shape(1), dout.shape(2), dout.shape(3)});
    const index_t plane = s.h * s.w;
    const std::int64_t* ap = cptr<std::int64_t>(argmax);
    const index_t count = static_cast<index_t>(argmax.size());
    py::array gate;
    const bool gated = optional_array(relu_output, "relu_output", gate);
    if (gated) {
        same_kind(dout, "dout", gate, "relu_output");
        check_shape(gate, "relu_output", {s.n, s.c, s.h, s.w});
    }
    return dispatch(kind, [&](auto t) -> py::array {
        using T = decltype(t);
        py::array dx = empty<T>({s.n, s.c, s.h, s.w});
        T* dxp = ptr<T>(dx);
        const T* dp = cptr<T>(dout);
        const T* gp = gated ? cptr<T>(gate) : nullptr;
        const index_t out_plane = dout.shape(2) * dout.shape(3);
        bool in_range;
        {
            py::gil_scoped_release release;
            in_range = max_pool2d_backward<T>(dxp, dp, ap, s.n * s.c, plane, out_plane, gp);
        }
        if (!in_range) {  // find the first offender for the message
            for (index_t i = 0; i < count; ++i)
                if (ap[i] < 0 || ap[i] >= plane)
                    value_error(cat("argmax holds ", ap[i], " at flat position ", i,
                                    ", outside the input plane [0, ", plane, ") of H*W = ", s.h,
                                    "*", s.w));
        }
        return dx;
    });
}

template <bool Reference>
py::array py_avg_pool2d_forward(const py::array& x, index_t pool_h, index_t pool_w, index_t sh,
                                index_t sw, index_t ph, index_t pw) {
    const Nchw s = nchw(x, "x");
    const Window2d g = pool_window(s, pool_h, pool_w, sh, sw, ph, pw);
    return dispatch(float_kind(x, "x"), [&](auto t) -> py::array {
        using T = decltype(t);
        py::array y = empty<T>({s.n, s.c, g.oh(), g.ow()});
        T* yp = ptr<T>(y);
        const T* xp = cptr<T>(x);
        py::gil_scoped_release release;
        if constexpr (Reference)
            avg_pool2d_forward_reference<T>(yp, xp, s.n, s.c, g);
        else
            avg_pool2d_forward<T>(yp, xp, s.n, s.c, g);
        return y;
    });
}

py::array py_avg_pool2d_backward(const py::array& dout, index_t n, index_t c, index_t h, index_t w,
                                 index_t pool_h, index_t pool_w, index_t sh, index_t sw, index_t ph,
                                 index_t pw) {
    const Nchw s = nchw_from_ints(n, c, h, w);
    const Window2d g = pool_window(s, pool_h, pool_w, sh, sw, ph, pw);
    check_shape(dout, "dout", {s.n, s.c, g.oh(), g.ow()});
    return dispatch(float_kind(dout, "dout"), [&](auto t) -> py::array {
        using T = decltype(t);
        py::array dx = empty<T>({s.n, s.c, s.h, s.w});
        T* dxp = ptr<T>(dx);
        const T* dp = cptr<T>(dout);
        py::gil_scoped_release release;
        avg_pool2d_backward<T>(dxp, dp, s.n, s.c, g);
        return dx;
    });
}

void check_writeable(const py::array& a, const char* name) {
    if (!a.writeable()) value_error(cat(name, " must be writeable: it is updated in place"));
}

// The result array of an elementwise kernel with `like`'s shape and dtype: a new one, or `out`
// when given (which may be one of the inputs itself, since each element is read before it is
// written, but must not partly overlap one).
py::array elementwise_out(const py::object& out_obj, const py::array& like, const char* like_name,
                          std::initializer_list<const py::array*> inputs) {
    py::array out;
    if (!optional_array(out_obj, "out", out)) return py::array(like.dtype(), like.request().shape);
    same_kind(like, like_name, out, "out");
    if (out.request().shape != like.request().shape)
        value_error(cat("out must have ", like_name, "'s shape ", shape_str(like), ", got ",
                        shape_str(out)));
    if (!out.writeable()) value_error("out must be writeable");
    py::object shares_memory = py::module_::import("numpy").attr("shares_memory");
    for (const py::array* input : inputs)
        if (out.data() != input->data() && shares_memory(out, *input).cast<bool>())
            value_error(
                cat("out may be ", like_name, " itself but must not partly overlap an input"));
    return out;
}

// y = kernel(x), elementwise, into `out` when given (see elementwise_out).
template <typename Kernel>
py::array unary(const py::array& x, const char* name, const py::object& out_obj, Kernel kernel) {
    float_kind(x, name);
    py::array y = elementwise_out(out_obj, x, name, {&x});
    return dispatch(float_kind(x, name), [&](auto t) -> py::array {
        using T = decltype(t);
        T* yp = ptr<T>(y);
        const T* xp = cptr<T>(x);
        const index_t size = static_cast<index_t>(x.size());
        {
            py::gil_scoped_release release;
            kernel(yp, xp, size);
        }
        return y;  // a copy of an array made outside: its reference count needs the GIL
    });
}

// dx = kernel(dout, other), elementwise, into `out` when given (see elementwise_out).
template <typename Kernel>
py::array binary(const py::array& dout, const py::array& other, const char* other_name,
                 const py::object& out_obj, Kernel kernel) {
    same_kind(dout, "dout", other, other_name);
    if (dout.request().shape != other.request().shape)
        value_error(cat("dout and ", other_name, " must have the same shape, got ", shape_str(dout),
                        " and ", shape_str(other)));
    py::array dx = elementwise_out(out_obj, dout, "dout", {&dout, &other});
    return dispatch(float_kind(dout, "dout"), [&](auto t) -> py::array {
        using T = decltype(t);
        T* dxp = ptr<T>(dx);
        const T *dp = cptr<T>(dout), *op = cptr<T>(other);
        const index_t size = static_cast<index_t>(dout.size());
        {
            py::gil_scoped_release release;
            kernel(dxp, dp, op, size);
        }
        return dx;  // as in unary: returned with the GIL held
    });
}

py::array py_add_forward(const py::array& a, const py::array& b, bool relu,
                         const py::object& out_obj) {
    same_kind(a, "a", b, "b");
    if (a.request().shape != b.request().shape)
        value_error(
            cat("a and b must have the same shape, got ", shape_str(a), " and ", shape_str(b)));
    py::array y = elementwise_out(out_obj, a, "a", {&a, &b});
    return dispatch(float_kind(a, "a"), [&](auto t) -> py::array {
        using T = decltype(t);
        T* yp = ptr<T>(y);
        const T *ap = cptr<T>(a), *bp = cptr<T>(b);
        const index_t size = static_cast<index_t>(a.size());
        {
            py::gil_scoped_release release;
            add_forward<T>(yp, ap, bp, size, relu);
        }
        return y;  // as in unary: returned with the GIL held
    });
}

// ---------------------------------------------------------------------------------------------
// Global average pooling and batch normalisation

template <bool Reference>
py::array py_global_avg_pool2d_forward(const py::array& x) {
    const Nchw s = nchw(x, "x");
    return dispatch(float_kind(x, "x"), [&](auto t) -> py::array {
        using T = decltype(t);
        py::array y = empty<T>({s.n, s.c});
        T* yp = ptr<T>(y);
        const T* xp = cptr<T>(x);
        py::gil_scoped_release release;
        if constexpr (Reference)
            global_avg_pool2d_forward_reference<T>(yp, xp, s.n * s.c, s.h * s.w);
        else
            global_avg_pool2d_forward<T>(yp, xp, s.n * s.c, s.h * s.w);
        return y;
    });
}

py::array py_global_avg_pool2d_backward(const py::array& dout, index_t n, index_t c, index_t h,
                                        index_t w) {
    const Nchw s = nchw_from_ints(n, c, h, w);
    check_shape(dout, "dout", {s.n, s.c});
    return dispatch(float_kind(dout, "dout"), [&](auto t) -> py::array {
        using T = decltype(t);
        py::array dx = empty<T>({s.n, s.c, s.h, s.w});
        T* dxp = ptr<T>(dx);
        const T* dp = cptr<T>(dout);
        py::gil_scoped_release release;
        global_avg_pool2d_backward<T>(dxp, dp, s.n * s.c, s.h * s.w);
        return dx;
    });
}

// A per-channel vector of a batch normalisation: x's dtype, shape (C,).
void check_channel_vector(const py::array& a, const char* name, const py::array& x, index_t c) {
    same_kind(x, "x", a, name);
    check_shape(a, name, {c});
}

// Whether the bytes of two C-contiguous arrays overlap.
bool overlap(const py::array& a, const py::array& b) {
    if (a.nbytes() == 0 || b.nbytes() == 0) return false;
    const auto a0 = reinterpret_cast<std::uintptr_t>(a.data()),
               b0 = reinterpret_cast<std::uintptr_t>(b.data());
    return a0 < b0 + static_cast<std::uintptr_t>(b.nbytes()) &&
           b0 < a0 + static_cast<std::uintptr_t>(a.nbytes());
}

template <bool Reference>
py::tuple py_batch_norm2d_forward(const py::array& x, const py::array& gamma, const py::array& beta,
                                  py::array running_mean, py::array running_var, bool train,
                                  double momentum, double eps, bool unbiased, bool relu) {
    const Nchw s = nchw(x, "x");
    const char kind = float_kind(x, "x");
    check_channel_vector(gamma, "gamma", x, s.c);
    check_channel_vector(beta, "beta", x, s.c);
    check_channel_vector(running_mean, "running_mean", x, s.c);
    check_channel_vector(running_var, "running_var", x, s.c);
    if (train) {
        check_writeable(running_mean, "running_mean");
        check_writeable(running_var, "running_var");
        if (overlap(running_mean, running_var))
            value_error(
                "running_mean and running_var must not share memory: both are updated in place");
        for (const auto& [input, name] : {std::pair<const py::array*, const char*>{&x, "x"},
                                          {&gamma, "gamma"},
                                          {&beta, "beta"}})
            for (const auto& [stat, stat_name] :
                 {std::pair<const py::array*, const char*>{&running_mean, "running_mean"},
                  {&running_var, "running_var"}})
                if (overlap(*stat, *input))
                    value_error(cat(stat_name, " must not share memory with ", name,
                                    ": it is updated in place"));
    }
    if (!(momentum >= 0.0 && momentum <= 1.0))
        value_error(cat("momentum must be in [0, 1], got ", momentum));
    if (!(std::isfinite(eps) && eps > 0.0))
        value_error(cat("eps must be a finite number > 0, got ", eps));
    const index_t m = mul(s.n, s.h, s.w);
    if (train && unbiased && m == 1)
        value_error(
            cat("unbiased: the running variance of a single value per channel is undefined (m / (m "
                "- 1) with "
                "m = N*H*W = 1); PyTorch refuses it as well (x has shape ",
                shape_str(x), ")"));
    return dispatch(kind, [&](auto t) -> py::tuple {
        using T = decltype(t);
        py::array y = empty<T>({s.n, s.c, s.h, s.w}), mean = empty<T>({s.c}),
                  invstd = empty<T>({s.c});
        T *yp = ptr<T>(y), *mp = ptr<T>(mean), *ip = ptr<T>(invstd);
        T *rmp = ptr<T>(running_mean), *rvp = ptr<T>(running_var);
        const T *xp = cptr<T>(x), *gp = cptr<T>(gamma), *bp = cptr<T>(beta);
        {
            py::gil_scoped_release release;
            if constexpr (Reference)
                batch_norm2d_forward_reference<T>(yp, mp, ip, rmp, rvp, xp, gp, bp, s.n, s.c,
                                                  s.h * s.w, train, momentum, eps, unbiased, relu);
            else
                batch_norm2d_forward<T>(yp, mp, ip, rmp, rvp, xp, gp, bp, s.n, s.c, s.h * s.w,
                                        train, momentum, eps, unbiased, relu);
        }
        return py::make_tuple(y, mean, invstd);
    });
}

template <bool Reference>
py::tuple py_batch_norm2d_backward(const py::array& dout, const py::array& x,
                                   const py::array& gamma, const py::array& mean,
                                   const py::array& invstd, bool train,
                                   const py::object& relu_output) {
    const Nchw s = nchw(x, "x");
    const char kind = float_kind(x, "x");
    same_kind(x, "x", dout, "dout");
    check_shape(dout, "dout", {s.n, s.c, s.h, s.w});
    check_channel_vector(gamma, "gamma", x, s.c);
    check_channel_vector(mean, "mean", x, s.c);
    check_channel_vector(invstd, "invstd", x, s.c);
    py::array gate;
    const bool gated = optional_array(relu_output, "relu_output", gate);
    if (gated) {
        same_kind(x, "x", gate, "relu_output");
        check_shape(gate, "relu_output", {s.n, s.c, s.h, s.w});
    }
    return dispatch(kind, [&](auto t) -> py::tuple {
        using T = decltype(t);
        py::array dx = empty<T>({s.n, s.c, s.h, s.w}), dgamma = empty<T>({s.c}),
                  dbeta = empty<T>({s.c});
        T *dxp = ptr<T>(dx), *dgp = ptr<T>(dgamma), *dbp = ptr<T>(dbeta);
        const T *dp = cptr<T>(dout), *xp = cptr<T>(x), *gp = cptr<T>(gamma), *mp = cptr<T>(mean);
        const T *ip = cptr<T>(invstd), *rp = gated ? cptr<T>(gate) : nullptr;
        {
            py::gil_scoped_release release;
            if constexpr (Reference)
                batch_norm2d_backward_reference<T>(dxp, dgp, dbp, dp, xp, gp, mp, ip, rp, s.n, s.c,
                                                   s.h * s.w, train);
            else
                batch_norm2d_backward<T>(dxp, dgp, dbp, dp, xp, gp, mp, ip, rp, s.n, s.c, s.h * s.w,
                                         train);
        }
        return py::make_tuple(dx, dgamma, dbeta);
    });
}

void check_logits(const py::array& x, const char* name) {
    check_ndim(x, name, 2);
    if (x.shape(1) < 1)
        value_error(cat(name, " must have at least one class column, got shape ", shape_str(x)));
}

// Labels (N,) int64 in [0, K), or targets (N, K) of x's dtype. Labels are copied into `labels`
// and checked there, and the kernel reads that copy: the kernel runs without the GIL, and another
// thread could otherwise change t between the check and the use and index outside a row.
// Returns the labels, or null for targets.
const std::int64_t* check_targets(const py::array& x, const py::array& t, const char* xname,
                                  std::vector<std::int64_t>& labels) {
    const index_t n = x.shape(0), k = x.shape(1);
    if (t.ndim() == 1) {
        check_int64(t, "t (labels)");
        check_shape(t, "t", {n});
        const std::int64_t* tp = cptr<std::int64_t>(t);
        labels.assign(tp, tp + n);
        for (index_t i = 0; i < n; ++i)
            if (labels[i] < 0 || labels[i] >= k)
                value_error(cat("t holds label ", labels[i], " at position ", i, ", outside [0, ",
                                k, ") for ", xname, " with ", k, " classes"));
        return labels.data();
    }
    same_kind(x, xname, t, "t");
    check_shape(t, "t", {n, k});
    return nullptr;
}

py::array py_softmax_forward(const py::array& x) {
    check_logits(x, "x");
    return dispatch(float_kind(x, "x"), [&](auto t) -> py::array {
        using T = decltype(t);
        py::array y = empty<T>({x.shape(0), x.shape(1)});
        T* yp = ptr<T>(y);
        const T* xp = cptr<T>(x);
        const index_t n = x.shape(0), k = x.shape(1);
        py::gil_scoped_release release;
        softmax_forward<T>(yp, xp, n, k);
        return y;
    });
}

py::tuple py_softmax_cross_entropy_forward(const py::array& x, const py::array& t) {
    check_logits(x, "x");
    if (x.shape(0) < 1)
        value_error(
            cat("x must hold at least one row to average the loss over, got shape ", shape_str(x)));
    std::vector<std::int64_t> label_copy;
    const std::int64_t* labels = check_targets(x, t, "x", label_copy);
    return dispatch(float_kind(x, "x"), [&](auto tag) -> py::tuple {
        using T = decltype(tag);
        py::array y = empty<T>({x.shape(0), x.shape(1)});
        T* yp = ptr<T>(y);
        const T* xp = cptr<T>(x);
        const T* tp = labels ? nullptr : cptr<T>(t);
        const index_t n = x.shape(0), k = x.shape(1);
        T loss;
        {
            py::gil_scoped_release release;
            loss = softmax_cross_entropy_forward<T>(yp, xp, labels, tp, n, k);
        }
        return py::make_tuple(static_cast<double>(loss), y);
    });
}

py::array py_softmax_cross_entropy_backward(const py::array& y, const py::array& t, double dout) {
    check_logits(y, "y");
    if (y.shape(0) < 1) value_error(cat("y must hold at least one row, got shape ", shape_str(y)));
    std::vector<std::int64_t> label_copy;
    const std::int64_t* labels = check_targets(y, t, "y", label_copy);
    return dispatch(float_kind(y, "y"), [&](auto tag) -> py::array {
        using T = decltype(tag);
        py::array dx = empty<T>({y.shape(0), y.shape(1)});
        T* dxp = ptr<T>(dx);
        const T* yp = cptr<T>(y);
        const T* tp = labels ? nullptr : cptr<T>(t);
        const index_t n = y.shape(0), k = y.shape(1);
        py::gil_scoped_release release;
        softmax_cross_entropy_backward<T>(dxp, yp, labels, tp, T(dout), n, k);
        return dx;
    });
}

void affine_shapes(const py::array& x, const py::array& W, index_t& n, index_t& d, index_t& m) {
    check_ndim(x, "x", 2);
    check_ndim(W, "W", 2);
    same_kind(x, "x", W, "W");
    n = x.shape(0);
    d = x.shape(1);
    m = W.shape(1);
    if (W.shape(0) != d)
        value_error(cat("W must have x's ", d, " features as rows: x (flattened) ", shape_str(x),
                        ", W ", shape_str(W)));
}

py::array py_affine_forward(const py::array& x, const py::array& W, const py::array& b) {
    index_t n, d, m;
    affine_shapes(x, W, n, d, m);
    same_kind(x, "x", b, "b");
    check_shape(b, "b", {m});
    return dispatch(float_kind(x, "x"), [&](auto t) -> py::array {
        using T = decltype(t);
        py::array y = empty<T>({n, m});
        T* yp = ptr<T>(y);
        const T *xp = cptr<T>(x), *wp = cptr<T>(W), *bp = cptr<T>(b);
        py::gil_scoped_release release;
        affine_forward<T>(yp, xp, wp, bp, n, d, m);
        return y;
    });
}

py::tuple py_affine_backward(const py::array& dout, const py::array& x, const py::array& W,
                             bool need_dx) {
    index_t n, d, m;
    affine_shapes(x, W, n, d, m);
    same_kind(x, "x", dout, "dout");
    check_shape(dout, "dout", {n, m});
    return dispatch(float_kind(x, "x"), [&](auto t) -> py::tuple {
        using T = decltype(t);
        py::object dx = py::none();
        if (need_dx) dx = empty<T>({n, d});
        py::array dw = empty<T>({d, m}), db = empty<T>({m});
        T* dxp = dx.is_none() ? nullptr : ptr<T>(py::reinterpret_borrow<py::array>(dx));
        T *dwp = ptr<T>(dw), *dbp = ptr<T>(db);
        const T *dp = cptr<T>(dout), *xp = cptr<T>(x), *wp = cptr<T>(W);
        {
            py::gil_scoped_release release;
            affine_backward<T>(dxp, dwp, dbp, dp, xp, wp, n, d, m);
        }
        return py::make_tuple(dx, dw, db);
    });
}

// Checks the arrays of an in-place update: one float dtype and shape, C-contiguous, and the
// updated ones writeable. Returns the dtype kind.
char check_update(const py::array& param,
                  std::initializer_list<std::pair<const py::array*, const char*>> state,
                  const py::array& grad) {
    const char kind = float_kind(param, "param");
    same_kind(param, "param", grad, "grad");
    check_writeable(param, "param");
    const std::vector<py::ssize_t> shape(param.shape(), param.shape() + param.ndim());
    auto same_shape = [&](const py::array& a, const char* name) {
        if (std::vector<py::ssize_t>(a.shape(), a.shape() + a.ndim()) != shape)
            value_error(cat(name, " must have the shape of param ", shape_str(param), ", got ",
                            shape_str(a)));
    };
    same_shape(grad, "grad");
    for (const auto& [arr, name] : state) {
        same_kind(param, "param", *arr, name);
        same_shape(*arr, name);
        check_writeable(*arr, name);
    }
    return kind;
}

void py_sgd_update(py::array param, const py::array& grad, double lr) {
    dispatch(check_update(param, {}, grad), [&](auto t) {
        using T = decltype(t);
        T* pp = ptr<T>(param);
        const T* gp = cptr<T>(grad);
        const index_t size = static_cast<index_t>(param.size());
        py::gil_scoped_release release;
        sgd_update<T>(pp, gp, size, T(lr));
        return 0;
    });
}

void py_momentum_update(py::array param, py::array v, const py::array& grad, double lr,
                        double momentum, bool nesterov) {
    dispatch(check_update(param, {{&v, "v"}}, grad), [&](auto t) {
        using T = decltype(t);
        T *pp = ptr<T>(param), *vp = ptr<T>(v);
        const T* gp = cptr<T>(grad);
        const index_t size = static_cast<index_t>(param.size());
        py::gil_scoped_release release;
        momentum_update<T>(pp, vp, gp, size, T(lr), T(momentum), nesterov, T(momentum * momentum),
                           T((1 + momentum) * lr));
        return 0;
    });
}

void py_adaptive_update(py::array param, py::array h, const py::array& grad, double lr,
                        bool rmsprop, double decay, double eps) {
    dispatch(check_update(param, {{&h, "h"}}, grad), [&](auto t) {
        using T = decltype(t);
        T *pp = ptr<T>(param), *hp = ptr<T>(h);
        const T* gp = cptr<T>(grad);
        const index_t size = static_cast<index_t>(param.size());
        py::gil_scoped_release release;
        adaptive_update<T>(pp, hp, gp, size, T(lr), rmsprop, T(decay), T(1 - decay), T(eps));
        return 0;
    });
}

// Updates param, m and v in place.
void py_adam_update(py::array param, py::array m, py::array v, const py::array& grad, double lr_t,
                    double beta1, double beta2, double eps) {
    dispatch(check_update(param, {{&m, "m"}, {&v, "v"}}, grad), [&](auto t) {
        using T = decltype(t);
        T *pp = ptr<T>(param), *mp = ptr<T>(m), *vp = ptr<T>(v);
        const T* gp = cptr<T>(grad);
        const index_t size = static_cast<index_t>(param.size());
        py::gil_scoped_release release;
        adam_update<T>(pp, mp, vp, gp, size, T(lr_t), T(1.0 - beta1), T(1.0 - beta2), T(eps));
        return 0;
    });
}

// The flat (C-order) index of the first element x of values for which x (squared false) or x * x
// (squared true) is NaN or infinite, or -1 when there is none: checked for every gradient before
// an update, so that a training loop can refuse the whole step and leave parameters and optimizer
// state untouched.
template <bool Reference>
index_t py_find_nonfinite(const py::array& values, bool squared) {
    const char kind = float_kind(values, "values");
    const index_t size = static_cast<index_t>(values.size());
    return dispatch(kind, [&](auto t) {
        using T = decltype(t);
        const T* vp = cptr<T>(values);
        py::gil_scoped_release release;
        if constexpr (Reference)
            return find_nonfinite_reference<T>(vp, size, squared);
        else
            return find_nonfinite<T>(vp, size, squared);
    });
}

// ---------------------------------------------------------------------------------------------
// Configuration

std::string compiler_name() {
#if defined(__clang__)
    return cat("Clang ", __clang_major__, ".", __clang_minor__, ".", __clang_patchlevel__);
#elif defined(__GNUC__)
    return cat("GCC ", __GNUC__, ".", __GNUC_MINOR__, ".", __GNUC_PATCHLEVEL__);
#elif defined(_MSC_VER)
    return cat("MSVC ", _MSC_VER);
#else
    return "unknown compiler";
#endif
}

std::string openmp_version() {
#ifdef _OPENMP
    // _OPENMP is the release date (yyyymm) of the supported specification.
    const int date = _OPENMP;
    const char* version = date >= 202011   ? "5.1"
                          : date >= 201811 ? "5.0"
                          : date >= 201511 ? "4.5"
                          : date >= 201307 ? "4.0"
                          : date >= 201107 ? "3.1"
                          : date >= 200805 ? "3.0"
                                           : "2.5";
    return cat(version, " (_OPENMP=", date, ")");
#else
    return "built without OpenMP";
#endif
}

// Vector width of the code built for the baseline (everything except the dispatched GEMM).
int baseline_simd_bits() {
#if defined(__AVX512F__)
    return 512;
#elif defined(__AVX__)
    return 256;
#elif defined(__SSE2__) || defined(_M_X64) || defined(__ARM_NEON) || defined(__aarch64__)
    return 128;
#else
    return 0;
#endif
}

int isa_simd_bits(const std::string& isa) {
    if (isa == "avx512") return 512;
    if (isa == "avx2") return 256;
    return baseline_simd_bits();
}

py::dict config() {
    py::dict d;
    d["version"] = TINYCONV_VERSION;
    d["compiler"] = compiler_name();
    d["openmp"] = openmp_version();
#ifdef TINYCONV_OPENMP_RUNTIME
    d["openmp_runtime"] = TINYCONV_OPENMP_RUNTIME;  // the library the threads come from
#else
    d["openmp_runtime"] = "";  // no runtime: every kernel runs on the calling thread
#endif
#ifdef _OPENMP
    d["num_procs"] = omp_get_num_procs();
#else
    d["num_procs"] = 1;
#endif
    d["num_threads"] = num_threads();
    d["isa"] = gemm_isa();
    d["available_isas"] = gemm_available_isas();
    d["simd_bits"] = isa_simd_bits(gemm_isa());
    d["baseline_simd_bits"] = baseline_simd_bits();
#ifdef TINYCONV_SANITIZERS
    d["sanitizers"] = TINYCONV_SANITIZERS;  // a test build (.ci/sanitize), not one to use
#else
    d["sanitizers"] = "";
#endif
    return d;
}

}  // namespace

// The most threads set_num_threads accepts (as tinyconv.set_num_threads): OpenMP aborts the
// process when it cannot create the threads asked for.
constexpr index_t kMaxThreads = 4096;

PYBIND11_MODULE(_core, m) {
    m.doc() = "tinyconv's compiled kernels (private: use tinyconv.functional)";

    // def_checked: every argument is converted and checked by name before the function runs.
    def_checked(m, "gemm", &py_gemm<false>, py::arg("a"), py::arg("b"), py::arg("c"),
                py::arg("alpha"), py::arg("beta"), py::arg("trans_a"), py::arg("trans_b"));
    def_checked(m, "im2col", &py_im2col<false>, py::arg("input_data"), py::arg("filter_h"),
                py::arg("filter_w"), py::arg("stride_h"), py::arg("stride_w"), py::arg("pad_h"),
                py::arg("pad_w"));
    def_checked(m, "col2im", &py_col2im<false>, py::arg("col"), py::arg("n"), py::arg("c"),
                py::arg("h"), py::arg("w"), py::arg("filter_h"), py::arg("filter_w"),
                py::arg("stride_h"), py::arg("stride_w"), py::arg("pad_h"), py::arg("pad_w"));
    def_checked(m, "conv2d_forward", &py_conv2d_forward<false>, py::arg("x"), py::arg("W"),
                py::arg("b"), py::arg("stride_h"), py::arg("stride_w"), py::arg("pad_h"),
                py::arg("pad_w"), py::arg("relu") = false);
    def_checked(m, "conv2d_max_pool_forward", &py_conv2d_max_pool_forward<false>, py::arg("x"),
                py::arg("W"), py::arg("b"), py::arg("stride_h"), py::arg("stride_w"),
                py::arg("pad_h"), py::arg("pad_w"), py::arg("relu"), py::arg("pool_h"),
                py::arg("pool_w"), py::arg("pool_stride_h"), py::arg("pool_stride_w"),
                py::arg("pool_pad_h"), py::arg("pool_pad_w"));
    def_checked(m, "conv2d_backward", &py_conv2d_backward<false>, py::arg("dout"), py::arg("x"),
                py::arg("W"), py::arg("stride_h"), py::arg("stride_w"), py::arg("pad_h"),
                py::arg("pad_w"), py::arg("need_dx") = true);
    def_checked(m, "max_pool2d_forward", &py_max_pool2d_forward<false>, py::arg("x"),
                py::arg("pool_h"), py::arg("pool_w"), py::arg("stride_h"), py::arg("stride_w"),
                py::arg("pad_h"), py::arg("pad_w"), py::arg("with_argmax") = true);
    def_checked(m, "max_pool2d_backward_from_input", &py_max_pool2d_backward_from_input,
                py::arg("dout"), py::arg("x"), py::arg("pool_h"), py::arg("pool_w"),
                py::arg("stride_h"), py::arg("stride_w"), py::arg("pad_h"), py::arg("pad_w"),
                py::arg("through_relu") = false);
    def_checked(m, "max_pool2d_backward", &py_max_pool2d_backward, py::arg("dout"),
                py::arg("argmax"), py::arg("n"), py::arg("c"), py::arg("h"), py::arg("w"),
                py::arg("relu_output") = py::none());
    def_checked(m, "avg_pool2d_forward", &py_avg_pool2d_forward<false>, py::arg("x"),
                py::arg("pool_h"), py::arg("pool_w"), py::arg("stride_h"), py::arg("stride_w"),
                py::arg("pad_h"), py::arg("pad_w"));
    def_checked(m, "avg_pool2d_backward", &py_avg_pool2d_backward, py::arg("dout"), py::arg("n"),
                py::arg("c"), py::arg("h"), py::arg("w"), py::arg("pool_h"), py::arg("pool_w"),
                py::arg("stride_h"), py::arg("stride_w"), py::arg("pad_h"), py::arg("pad_w"));
    def_checked(
        m, "relu_forward",
        +[](const py::array& x, const py::object& out) {
            return unary(x, "x", out,
                         [](auto* y, const auto* xp, index_t n) { relu_forward(y, xp, n); });
        },
        py::arg("x"), py::arg("out") = py::none());
    def_checked(
        m, "relu_backward",
        +[](const py::array& dout, const py::array& x, const py::object& out) {
            return binary(dout, x, "x", out,
                          [](auto* dx, const auto* d, const auto* xp, index_t n) {
                              relu_backward(dx, d, xp, n);
                          });
        },
        py::arg("dout"), py::arg("x"), py::arg("out") = py::none());
    def_checked(
        m, "sigmoid_forward",
        +[](const py::array& x) {
            return unary(x, "x", py::none(),
                         [](auto* y, const auto* xp, index_t n) { sigmoid_forward(y, xp, n); });
        },
        py::arg("x"));
    def_checked(
        m, "sigmoid_backward",
        +[](const py::array& dout, const py::array& y, const py::object& out) {
            return binary(dout, y, "y", out,
                          [](auto* dx, const auto* d, const auto* yp, index_t n) {
                              sigmoid_backward(dx, d, yp, n);
                          });
        },
        py::arg("dout"), py::arg("y"), py::arg("out") = py::none());
    def_checked(m, "add_forward", &py_add_forward, py::arg("a"), py::arg("b"),
                py::arg("relu") = false, py::arg("out") = py::none());
    def_checked(m, "global_avg_pool2d_forward", &py_global_avg_pool2d_forward<false>, py::arg("x"));
    def_checked(m, "global_avg_pool2d_backward", &py_global_avg_pool2d_backward, py::arg("dout"),
                py::arg("n"), py::arg("c"), py::arg("h"), py::arg("w"));
    def_checked(m, "batch_norm2d_forward", &py_batch_norm2d_forward<false>, py::arg("x"),
                py::arg("gamma"), py::arg("beta"), py::arg("running_mean"), py::arg("running_var"),
                py::arg("train"), py::arg("momentum"), py::arg("eps"), py::arg("unbiased") = false,
                py::arg("relu") = false);
    def_checked(m, "batch_norm2d_backward", &py_batch_norm2d_backward<false>, py::arg("dout"),
                py::arg("x"), py::arg("gamma"), py::arg("mean"), py::arg("invstd"),
                py::arg("train"), py::arg("relu_output") = py::none());
    def_checked(m, "softmax_forward", &py_softmax_forward, py::arg("x"));
    def_checked(m, "softmax_cross_entropy_forward", &py_softmax_cross_entropy_forward, py::arg("x"),
                py::arg("t"));
    def_checked(m, "softmax_cross_entropy_backward", &py_softmax_cross_entropy_backward,
                py::arg("y"), py::arg("t"), py::arg("dout"));
    def_checked(m, "affine_forward", &py_affine_forward, py::arg("x"), py::arg("W"), py::arg("b"));
    def_checked(m, "affine_backward", &py_affine_backward, py::arg("dout"), py::arg("x"),
                py::arg("W"), py::arg("need_dx") = true);

    def_checked(m, "sgd_update", &py_sgd_update, py::arg("param"), py::arg("grad"), py::arg("lr"));
    def_checked(m, "momentum_update", &py_momentum_update, py::arg("param"), py::arg("v"),
                py::arg("grad"), py::arg("lr"), py::arg("momentum"), py::arg("nesterov"));
    def_checked(m, "adaptive_update", &py_adaptive_update, py::arg("param"), py::arg("h"),
                py::arg("grad"), py::arg("lr"), py::arg("rmsprop"), py::arg("decay"),
                py::arg("eps"));
    def_checked(m, "adam_update", &py_adam_update, py::arg("param"), py::arg("m"), py::arg("v"),
                py::arg("grad"), py::arg("lr_t"), py::arg("beta1"), py::arg("beta2"),
                py::arg("eps"));
    def_checked(m, "find_nonfinite", &py_find_nonfinite<false>, py::arg("values"),
                py::arg("squared") = false);

    def_checked(
        m, "set_num_threads",
        +[](index_t n) {
            if (n < 1 || n > kMaxThreads)
                value_error(cat("n must be in [1, ", kMaxThreads, "], got ", n));
            set_num_threads(static_cast<int>(n));
        },
        py::arg("n"));
    m.def("get_num_threads", &num_threads);
    def_checked(
        m, "set_isa",
        +[](std::string name) {
            if (!gemm_set_isa(name))
                value_error(cat("isa must be one of the levels this CPU runs (",
                                gemm_available_isas(), "), got '", name, "'"));
        },
        py::arg("isa"));
    m.def("config", &config);

    // The plain loops kept beside each fast kernel, exposed for the tests (same arguments and
    // validation as the fast entry points above).
    py::module_ ref =
        m.def_submodule("reference", "plain-loop oracles of the fast kernels (tests only)");
    def_checked(ref, "gemm", &py_gemm<true>, py::arg("a"), py::arg("b"), py::arg("c"),
                py::arg("alpha"), py::arg("beta"), py::arg("trans_a"), py::arg("trans_b"));
    def_checked(ref, "im2col", &py_im2col<true>, py::arg("input_data"), py::arg("filter_h"),
                py::arg("filter_w"), py::arg("stride_h"), py::arg("stride_w"), py::arg("pad_h"),
                py::arg("pad_w"));
    def_checked(ref, "col2im", &py_col2im<true>, py::arg("col"), py::arg("n"), py::arg("c"),
                py::arg("h"), py::arg("w"), py::arg("filter_h"), py::arg("filter_w"),
                py::arg("stride_h"), py::arg("stride_w"), py::arg("pad_h"), py::arg("pad_w"));
    def_checked(ref, "conv2d_forward", &py_conv2d_forward<true>, py::arg("x"), py::arg("W"),
                py::arg("b"), py::arg("stride_h"), py::arg("stride_w"), py::arg("pad_h"),
                py::arg("pad_w"), py::arg("relu") = false);
    def_checked(ref, "conv2d_max_pool_forward", &py_conv2d_max_pool_forward<true>, py::arg("x"),
                py::arg("W"), py::arg("b"), py::arg("stride_h"), py::arg("stride_w"),
                py::arg("pad_h"), py::arg("pad_w"), py::arg("relu"), py::arg("pool_h"),
                py::arg("pool_w"), py::arg("pool_stride_h"), py::arg("pool_stride_w"),
                py::arg("pool_pad_h"), py::arg("pool_pad_w"));
    def_checked(ref, "conv2d_backward", &py_conv2d_backward<true>, py::arg("dout"), py::arg("x"),
                py::arg("W"), py::arg("stride_h"), py::arg("stride_w"), py::arg("pad_h"),
                py::arg("pad_w"), py::arg("need_dx") = true);
    def_checked(ref, "max_pool2d_forward", &py_max_pool2d_forward<true>, py::arg("x"),
                py::arg("pool_h"), py::arg("pool_w"), py::arg("stride_h"), py::arg("stride_w"),
                py::arg("pad_h"), py::arg("pad_w"), py::arg("with_argmax") = true);
    def_checked(ref, "avg_pool2d_forward", &py_avg_pool2d_forward<true>, py::arg("x"),
                py::arg("pool_h"), py::arg("pool_w"), py::arg("stride_h"), py::arg("stride_w"),
                py::arg("pad_h"), py::arg("pad_w"));
    def_checked(ref, "global_avg_pool2d_forward", &py_global_avg_pool2d_forward<true>,
                py::arg("x"));
    def_checked(ref, "batch_norm2d_forward", &py_batch_norm2d_forward<true>, py::arg("x"),
                py::arg("gamma"), py::arg("beta"), py::arg("running_mean"), py::arg("running_var"),
                py::arg("train"), py::arg("momentum"), py::arg("eps"), py::arg("unbiased") = false,
                py::arg("relu") = false);
    def_checked(ref, "batch_norm2d_backward", &py_batch_norm2d_backward<true>, py::arg("dout"),
                py::arg("x"), py::arg("gamma"), py::arg("mean"), py::arg("invstd"),
                py::arg("train"), py::arg("relu_output") = py::none());
    def_checked(ref, "find_nonfinite", &py_find_nonfinite<true>, py::arg("values"),
                py::arg("squared") = false);
}
