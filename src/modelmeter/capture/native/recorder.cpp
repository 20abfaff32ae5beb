// modelmeter's native op recorder: the capture of a real-tensor inference run, without a Python call per op.
//
// A thread-local RecordFunction callback (the hook PyTorch's profiler uses) sees every dispatcher call of
// the thread that started it. It records the ops a TorchDispatchMode would see: an op whose kernel is
// not CompositeImplicitAutograd, called outside any other recorded op (a CompositeImplicitAutograd op,
// e.g. conv2d or linear, runs its decomposition above the Python key; the mode sees the ops it calls).
// While a recorded op runs, RecordFunction is switched off for this thread, so the ops its kernel calls
// pay nothing. For each recorded op the arguments are kept as the mode would receive them (trailing
// defaulted positional arguments dropped, keyword-only ones as keywords unless defaulted) with every
// tensor replaced by its metadata, taken after the op ran (as the mode takes it). No tensor is held
// past its op. Python objects are built only in drain(), after the run, with the GIL held (ops may run
// with the GIL released).
//
// Records go onto a tape of int64 words reserved before the run, never into small heap blocks: small
// blocks that outlive an op, allocated just after its large output, keep glibc from reusing the
// output's memory when it is freed, and every later output of that size was then faulted in afresh
// (a 1.2 MB elementwise op went from 47 to 600 us).
//
// Built on first use by modelmeter/capture/native/__init__.py against the installed torch.

#include <Python.h>

#include <ATen/core/Tensor.h>
#include <ATen/core/dispatch/Dispatcher.h>
#include <ATen/core/ivalue.h>
#include <ATen/record_function.h>

#include <cstring>
#include <memory>
#include <sstream>
#include <string>
#include <thread>
#include <unordered_map>
#include <vector>

namespace {

enum Kind : int8_t { K_OTHER = 0, K_DTYPE = 1, K_LAYOUT = 2, K_MEMFMT = 3 };

struct OpInfo {
  bool visible = false;
  int id = -1;
  const c10::FunctionSchema* schema = nullptr;
  std::vector<int8_t> kinds;
  size_t kwarg_only_start = 0;
  OpInfo* as_view = nullptr;  // aten::_reshape_alias: recorded as aten::view (see view_info())
  // aten::detach_: its autograd kernel does the work and never calls down to the kernels below
  // autograd, where a dispatch mode sits; a mode sees it only for a tensor without autograd keys
  bool autograd_only = false;
};

// value tags on the tape
enum Tag : int64_t {
  T_NONE = 0,
  T_TENSOR = 1,   // ndim, sizes..., dtype, device type, requires_grad, storage, storage nbytes, numel, nbytes
  T_LIST = 2,     // n, values...
  T_INT = 3,
  T_DTYPE = 4,
  T_LAYOUT = 5,
  T_MEMFMT = 6,
  T_DOUBLE = 7,   // the double's bits
  T_BOOL = 8,
  T_COMPLEX = 9,  // real bits, imaginary bits
  T_INTLIST = 10,
  T_DOUBLELIST = 11,
  T_BOOLLIST = 12,
  T_EXTRA = 13,   // index into State::extras (a string, a device)
  T_SKIP = 14,    // an argument slot the mode does not receive (a trailing default)
};

struct State {
  bool active = false;
  int paused = 0;
  bool open = false;         // a recorded op is running (RecordFunction is off until it returns)
  bool unsupported = false;  // a value met that only the Python capture describes
  unsigned long owner = 0;
  std::thread::id owner_tid;
  std::vector<int> modules{0};
  // record: op id, module id, npos, nkw, kw indices..., nslots, values..., nouts, values...
  std::vector<int64_t> tape;
  size_t nrecs = 0;
  std::vector<c10::IValue> pending;  // the running op's arguments: their metadata is taken after it
  const OpInfo* pending_info = nullptr;
  std::vector<c10::IValue> extras;
  std::vector<OpInfo*> ops;  // by id
  std::unordered_map<const char*, std::unique_ptr<OpInfo>> infos;
  at::CallbackHandle handle = 0;
};

State S;

// Python objects handed over by configure()
PyObject* g_dtypes = nullptr;        // list: ScalarType value -> torch.dtype
PyObject* g_layouts = nullptr;       // list: Layout value -> torch.layout
PyObject* g_memfmts = nullptr;       // list: MemoryFormat value -> torch.memory_format
PyObject* g_device = nullptr;        // torch.device
PyTypeObject* g_size = nullptr;      // torch.Size
PyTypeObject* g_meta = nullptr;      // modelmeter's TensorMeta (a tuple subclass)
PyTypeObject* g_event = nullptr;     // modelmeter's OpEvent
std::unordered_map<int, PyObject*> g_device_names;

Kind kind_of(const c10::Argument& a) {
  auto t = a.real_type();
  if (auto opt = t->cast<c10::OptionalType>()) t = opt->getElementType();
  switch (t->kind()) {
    case c10::TypeKind::ScalarTypeType: return K_DTYPE;
    case c10::TypeKind::LayoutType: return K_LAYOUT;
    case c10::TypeKind::MemoryFormatType: return K_MEMFMT;
    default: return K_OTHER;
  }
}

OpInfo* info_of_handle(const char* key, const std::optional<c10::OperatorHandle>& handle);

// Under a dispatch mode PyTorch's reshape makes a view with aten::view; without one, with
// aten::_reshape_alias (at::native::reshape takes the view path for "tensor-subclass-like" inputs, and
// an active dispatch mode makes every input one). The same view of the same size: recorded as the
// aten::view a mode sees, so that the native and Python captures (and meta runs) agree.
OpInfo* view_info() {
  static OpInfo* info = nullptr;
  if (info == nullptr) {
    auto handle = c10::Dispatcher::singleton().findOp(c10::OperatorName("aten::view", ""));
    if (handle && handle->hasSchema()) info = info_of_handle(handle->schema().name().c_str(), handle);
  }
  return info;
}

OpInfo* info_of_handle(const char* key, const std::optional<c10::OperatorHandle>& handle) {
  auto it = S.infos.find(key);
  if (it != S.infos.end()) return it->second.get();
  auto info = std::make_unique<OpInfo>();
  if (handle && handle->hasSchema()) {
    // a CompositeImplicitAutograd kernel that runs in place of a CPU kernel of the op's own decomposes
    // above the Python key (conv2d, linear; _fused_rms_norm, whose own kernel is CUDA's); one beside a
    // CPU kernel does not (silu_backward, native_channel_shuffle). The rule of
    // tracer.decomposes_above_autograd, for the CPU.
    bool own = false;
    for (auto k : {c10::DispatchKey::CPU, c10::DispatchKey::CompositeExplicitAutograd,
                   c10::DispatchKey::CompositeExplicitAutogradNonFunctional})
      own = own || handle->hasKernelForDispatchKey(k);
    info->visible = own || !handle->hasKernelForDispatchKey(c10::DispatchKey::CompositeImplicitAutograd);
    info->schema = &handle->schema();
    const auto& args = info->schema->arguments();
    info->kinds.reserve(args.size());
    for (const auto& a : args) info->kinds.push_back(kind_of(a));
    size_t k = args.size();
    while (k > 0 && args[k - 1].kwarg_only()) k--;
    info->kwarg_only_start = k;
  }
  OpInfo* out = info.get();
  S.infos.emplace(key, std::move(info));
  if (out->visible) {
    out->id = static_cast<int>(S.ops.size());
    S.ops.push_back(out);
    const auto& name = out->schema->operator_name();
    if (name.name == "aten::_reshape_alias" && name.overload_name.empty()) out->as_view = view_info();
    if (name.name == "aten::detach_" && name.overload_name.empty()) out->autograd_only = true;
  }
  return out;
}

OpInfo* info_of(const at::RecordFunction& fn) {
  const char* key = fn.name();
  auto it = S.infos.find(key);
  if (it != S.infos.end()) return it->second.get();
  auto name = fn.operator_name();
  std::optional<c10::OperatorHandle> handle;
  if (name) handle = c10::Dispatcher::singleton().findOp(*name);
  return info_of_handle(key, handle);
}

// the TensorImpls of an op's tensor arguments, while its outputs are described (see describe())
thread_local std::vector<const c10::TensorImpl*> t_inputs;
thread_local bool t_describing_outputs = false;

inline void put(int64_t x) { S.tape.push_back(x); }

inline int64_t bits(double d) {
  int64_t b;
  std::memcpy(&b, &d, sizeof b);
  return b;
}

// A Python number passed where an op takes a tensor (x + 1) is a 0-dim "wrapped number" tensor; a
// dispatch mode receives it as the number. Its value, read from its memory (no op is dispatched).
bool wrapped_number(const at::Tensor& t) {
  if (!t.unsafeGetTensorImpl()->is_wrapped_number() || !t.is_cpu() || !t.has_storage()) return false;
  const void* p = t.const_data_ptr();
  switch (t.scalar_type()) {
    case c10::ScalarType::Long: put(T_INT); put(*static_cast<const int64_t*>(p)); return true;
    case c10::ScalarType::Int: put(T_INT); put(*static_cast<const int32_t*>(p)); return true;
    case c10::ScalarType::Double: put(T_DOUBLE); put(bits(*static_cast<const double*>(p))); return true;
    case c10::ScalarType::Float: put(T_DOUBLE); put(bits(*static_cast<const float*>(p))); return true;
    case c10::ScalarType::Bool: put(T_BOOL); put(*static_cast<const bool*>(p)); return true;
    case c10::ScalarType::ComplexDouble: {
      auto c = *static_cast<const c10::complex<double>*>(p);
      put(T_COMPLEX); put(bits(c.real())); put(bits(c.imag()));
      return true;
    }
    default: return false;
  }
}

void describe(const at::Tensor& t) {
  if (!t.defined()) {
    put(T_NONE);
    return;
  }
  if (wrapped_number(t)) return;
  // sparse and other storage-less layouts, tensor subclasses, functorch wrappers, lazy conjugate or
  // negative views (materialized by keys above the one a dispatch mode sees): the Python capture's
  static const c10::DispatchKeySet special({c10::DispatchKey::Python, c10::DispatchKey::FuncTorchBatched,
                                            c10::DispatchKey::FuncTorchGradWrapper, c10::DispatchKey::Functionalize,
                                            c10::DispatchKey::Conjugate, c10::DispatchKey::Negative,
                                            c10::DispatchKey::ZeroTensor, c10::DispatchKey::NestedTensor});
  if (!t.has_storage() || t.key_set().has_any(special)) {
    S.unsupported = true;
    put(T_NONE);
    return;
  }
  auto sizes = t.sizes();
  put(T_TENSOR);
  put(static_cast<int64_t>(sizes.size()));
  for (auto d : sizes) put(d);
  put(static_cast<int64_t>(t.scalar_type()));
  put(static_cast<int64_t>(t.device().type()));
  // A dispatch mode sees an op's outputs below autograd, before a view or a new tensor is given its
  // autograd metadata: they do not require grad, unless the output is one of the op's own arguments.
  bool requires_grad = t.requires_grad();
  if (t_describing_outputs) {
    const c10::TensorImpl* impl = t.unsafeGetTensorImpl();
    bool argument = false;
    for (const auto* p : t_inputs) argument = argument || p == impl;
    requires_grad = argument && requires_grad;
  }
  put(requires_grad);
  const auto& storage = t.storage();
  put(reinterpret_cast<intptr_t>(storage.unsafeGetStorageImpl()));
  put(static_cast<int64_t>(storage.nbytes()));
  int64_t numel = t.numel();
  put(numel);
  put(numel * static_cast<int64_t>(t.dtype().itemsize()));
}

void convert(const c10::IValue& iv, int8_t arg_kind) {
  if (iv.isTensor()) {
    describe(iv.toTensor());
  } else if (iv.isNone()) {
    put(T_NONE);
  } else if (iv.isInt()) {
    put(arg_kind == K_DTYPE ? T_DTYPE : arg_kind == K_LAYOUT ? T_LAYOUT : arg_kind == K_MEMFMT ? T_MEMFMT : T_INT);
    put(iv.toInt());
  } else if (iv.isDouble()) {
    put(T_DOUBLE);
    put(bits(iv.toDouble()));
  } else if (iv.isBool()) {
    put(T_BOOL);
    put(iv.toBool());
  } else if (iv.isComplexDouble()) {
    auto c = iv.toComplexDouble();
    put(T_COMPLEX);
    put(bits(c.real()));
    put(bits(c.imag()));
  } else if (iv.isTensorList()) {
    auto list = iv.toTensorList();
    put(T_LIST);
    put(static_cast<int64_t>(list.size()));
    for (size_t i = 0; i < list.size(); i++) describe(list.get(i));
  } else if (iv.isIntList()) {
    auto list = iv.toIntList();
    put(T_INTLIST);
    put(static_cast<int64_t>(list.size()));
    for (size_t i = 0; i < list.size(); i++) put(list.get(i));
  } else if (iv.isDoubleList()) {
    auto list = iv.toDoubleList();
    put(T_DOUBLELIST);
    put(static_cast<int64_t>(list.size()));
    for (size_t i = 0; i < list.size(); i++) put(bits(list.get(i)));
  } else if (iv.isBoolList()) {
    auto list = iv.toBoolList();
    put(T_BOOLLIST);
    put(static_cast<int64_t>(list.size()));
    for (size_t i = 0; i < list.size(); i++) put(list.get(i));
  } else if (iv.isList()) {  // a list of optional tensors, or of other values
    auto list = iv.toListRef();
    put(T_LIST);
    put(static_cast<int64_t>(list.size()));
    for (const auto& x : list) convert(x, K_OTHER);
  } else if (iv.isString() || iv.isDevice()) {
    put(T_EXTRA);
    put(static_cast<int64_t>(S.extras.size()));
    S.extras.push_back(iv);
  } else if (iv.isGenerator()) {
    put(T_NONE);  // a random generator: no cost rule reads it
  } else {
    S.unsupported = true;
    put(T_NONE);
  }
}

std::unique_ptr<at::ObserverContext> on_enter(const at::RecordFunction& fn) {
  // at::parallel_for hands the thread-local callbacks to its worker threads: only the thread that
  // started the recorder records (inside a recorded op RecordFunction is off anyway)
  if (std::this_thread::get_id() != S.owner_tid) return nullptr;
  if (S.paused) return nullptr;
  // a call PyTorch makes with the Python key excluded (torch.tensor's own empty and copy) is one a
  // dispatch mode never sees
  if (c10::impl::tls_is_dispatch_key_excluded(c10::DispatchKey::Python)) return nullptr;
  OpInfo* info = info_of(fn);
  if (!info->visible) return nullptr;
  if (info->as_view != nullptr) info = info->as_view;
  auto inputs = fn.inputs();
  if (info->autograd_only && !inputs.empty() && inputs[0].isTensor() &&
      inputs[0].toTensor().key_set().has_any(c10::autograd_dispatch_keyset) &&
      !c10::impl::tls_local_dispatch_key_set().excluded_.has_any(c10::autograd_dispatch_keyset))
    return nullptr;
  S.pending.assign(inputs.begin(), inputs.end());  // reuses the vector's memory
  S.pending_info = info;
  S.open = true;
  // the kernel's own calls are not the mode's to see: RecordFunction off until this op returns
  at::enableRecordFunction(false);
  return nullptr;  // no context object: RecordFunction is off, so the next exit is this op's
}

void on_exit(const at::RecordFunction& fn, at::ObserverContext*) {
  if (!S.open || std::this_thread::get_id() != S.owner_tid) return;
  S.open = false;
  at::enableRecordFunction(true);
  const OpInfo* info = S.pending_info;
  const auto& schema_args = info->schema->arguments();
  auto& in = S.pending;
  // (for _reshape_alias recorded as view: its self and size, not its stride)
  size_t n = std::min(in.size(), schema_args.size());
  auto is_default = [&](size_t i) {
    const auto& d = schema_args[i].default_value();
    return d.has_value() && *d == in[i];
  };
  size_t kw = std::min(info->kwarg_only_start, n);
  size_t npos = kw;
  while (npos > 0 && is_default(npos - 1)) npos--;
  put(info->id);
  put(S.modules.back());
  put(static_cast<int64_t>(npos));
  size_t nkw_at = S.tape.size();
  put(0);
  int64_t nkw = 0;
  for (size_t i = kw; i < n; i++)
    if (!is_default(i)) {
      put(static_cast<int64_t>(i));
      nkw++;
    }
  S.tape[nkw_at] = nkw;
  put(static_cast<int64_t>(n));
  for (size_t i = 0; i < n; i++) {
    if (i >= npos && i < kw) {
      put(T_SKIP);
    } else {
      convert(in[i], info->kinds[i]);
    }
  }
  t_inputs.clear();
  for (const auto& x : in) {
    if (x.isTensor()) {
      t_inputs.push_back(x.toTensor().unsafeGetTensorImpl());
    } else if (x.isTensorList()) {
      for (const auto& t : x.toTensorList()) t_inputs.push_back(static_cast<at::Tensor>(t).unsafeGetTensorImpl());
    }
  }
  const auto& outs = fn.outputs();
  put(static_cast<int64_t>(outs.size()));
  t_describing_outputs = true;
  for (const auto& o : outs) convert(o, K_OTHER);
  t_describing_outputs = false;
  t_inputs.clear();
  in.clear();
  S.nrecs++;
}

// forget every record (the tape keeps its memory)
void clear() {
  S.tape.clear();
  S.extras.clear();
  S.nrecs = 0;
  S.unsupported = false;
}

// ---- Python side ----------------------------------------------------------------------------------

// a string or device kept beside the tape
PyObject* extra_to_py(const c10::IValue& iv) {
  if (iv.isString()) return PyUnicode_FromString(iv.toStringRef().c_str());
  if (iv.isDevice()) return PyObject_CallFunction(g_device, "s", iv.toDevice().str().c_str());
  Py_RETURN_NONE;
}

PyObject* table_item(PyObject* table, int64_t x) {
  if (table != nullptr && x >= 0 && x < PyList_GET_SIZE(table)) {
    PyObject* o = PyList_GET_ITEM(table, x);
    if (o != Py_None) {
      Py_INCREF(o);
      return o;
    }
  }
  return PyLong_FromLongLong(x);
}

inline double from_bits(int64_t b) {
  double d;
  std::memcpy(&d, &b, sizeof d);
  return d;
}

PyObject* device_name(int16_t type) {
  auto it = g_device_names.find(type);
  if (it != g_device_names.end()) return it->second;
  std::string s = c10::DeviceTypeName(static_cast<c10::DeviceType>(type), /*lower_case=*/true);
  PyObject* o = PyUnicode_InternFromString(s.c_str());
  g_device_names.emplace(type, o);
  return o;
}

// A TensorMeta (shape, dtype, device, storage_key, storage_nbytes, requires_grad, numel, nbytes) from a
// T_TENSOR payload: ndim, sizes..., dtype, device type, requires_grad, storage, storage nbytes, numel, nbytes
PyObject* meta_to_py(const int64_t* p) {
  int64_t ndim = p[0];
  PyObject* shape = g_size->tp_alloc(g_size, static_cast<Py_ssize_t>(ndim));
  if (shape == nullptr) return nullptr;
  for (int64_t i = 0; i < ndim; i++) PyTuple_SET_ITEM(shape, i, PyLong_FromLongLong(p[1 + i]));
  const int64_t* q = p + 1 + ndim;
  PyObject* t = g_meta->tp_alloc(g_meta, 8);
  if (t == nullptr) {
    Py_DECREF(shape);
    return nullptr;
  }
  PyObject* dtype = (q[0] >= 0 && q[0] < PyList_GET_SIZE(g_dtypes)) ? PyList_GET_ITEM(g_dtypes, q[0]) : Py_None;
  Py_INCREF(dtype);
  PyObject* dev = device_name(static_cast<int16_t>(q[1]));
  Py_INCREF(dev);
  PyTuple_SET_ITEM(t, 0, shape);
  PyTuple_SET_ITEM(t, 1, dtype);
  PyTuple_SET_ITEM(t, 2, dev);
  PyTuple_SET_ITEM(t, 3, PyLong_FromSsize_t(static_cast<Py_ssize_t>(q[3])));
  PyTuple_SET_ITEM(t, 4, PyLong_FromLongLong(q[4]));
  PyTuple_SET_ITEM(t, 5, PyBool_FromLong(q[2]));
  PyTuple_SET_ITEM(t, 6, PyLong_FromLongLong(q[5]));
  PyTuple_SET_ITEM(t, 7, PyLong_FromLongLong(q[6]));
  return t;
}

// Reads values off the tape, making the Python objects a dispatch mode receives. One TensorMeta per
// distinct description: an op's output is usually the next op's input.
struct Reader {
  const int64_t* p;
  std::unordered_map<std::string, PyObject*> cache;
  std::string key;

  explicit Reader(const int64_t* start) : p(start) {}

  ~Reader() {
    for (auto& kv : cache) Py_DECREF(kv.second);
  }

  PyObject* tensor() {
    int64_t ndim = p[0];
    size_t words = static_cast<size_t>(ndim) + 8;  // ndim, sizes, 7 fields
    key.assign(reinterpret_cast<const char*>(p), words * sizeof(int64_t));
    PyObject* o;
    auto it = cache.find(key);
    if (it != cache.end()) {
      o = it->second;
    } else {
      o = meta_to_py(p);
      cache.emplace(key, o);
    }
    p += words;
    Py_INCREF(o);
    return o;
  }

  // the next value; every tensor's TensorMeta is appended to `found` when it is given
  PyObject* value(PyObject* found) {
    int64_t tag = *p++;
    switch (tag) {
      case T_TENSOR: {
        PyObject* m = tensor();
        if (found != nullptr) PyList_Append(found, m);
        return m;
      }
      case T_LIST: {
        int64_t n = *p++;
        PyObject* out = PyList_New(static_cast<Py_ssize_t>(n));
        for (int64_t i = 0; i < n; i++) PyList_SET_ITEM(out, i, value(found));
        return out;
      }
      case T_INT: return PyLong_FromLongLong(*p++);
      case T_DTYPE: return table_item(g_dtypes, *p++);
      case T_LAYOUT: return table_item(g_layouts, *p++);
      case T_MEMFMT: return table_item(g_memfmts, *p++);
      case T_DOUBLE: return PyFloat_FromDouble(from_bits(*p++));
      case T_BOOL: return PyBool_FromLong(*p++);
      case T_COMPLEX: {
        double re = from_bits(p[0]), im = from_bits(p[1]);
        p += 2;
        return PyComplex_FromDoubles(re, im);
      }
      case T_INTLIST:
      case T_DOUBLELIST:
      case T_BOOLLIST: {
        int64_t n = *p++;
        PyObject* out = PyList_New(static_cast<Py_ssize_t>(n));
        for (int64_t i = 0; i < n; i++) {
          int64_t x = *p++;
          PyList_SET_ITEM(out, i, tag == T_INTLIST ? PyLong_FromLongLong(x)
                                  : tag == T_DOUBLELIST ? PyFloat_FromDouble(from_bits(x)) : PyBool_FromLong(x));
        }
        return out;
      }
      case T_EXTRA: return extra_to_py(S.extras[*p++]);
      default: Py_RETURN_NONE;  // T_NONE, T_SKIP
    }
  }
};

PyObject* py_configure(PyObject*, PyObject* args) {
  PyObject *dtypes, *layouts, *memfmts, *device, *size, *meta, *event;
  if (!PyArg_ParseTuple(args, "O!O!O!OOOO", &PyList_Type, &dtypes, &PyList_Type, &layouts, &PyList_Type, &memfmts,
                        &device, &size, &meta, &event))
    return nullptr;
  Py_INCREF(event);
  g_event = reinterpret_cast<PyTypeObject*>(event);
  Py_XDECREF(g_dtypes);
  Py_XDECREF(g_layouts);
  Py_XDECREF(g_memfmts);
  Py_XDECREF(g_device);
  Py_INCREF(dtypes);
  Py_INCREF(layouts);
  Py_INCREF(memfmts);
  Py_INCREF(device);
  Py_INCREF(size);
  Py_INCREF(meta);
  g_dtypes = dtypes;
  g_layouts = layouts;
  g_memfmts = memfmts;
  g_device = device;
  g_size = reinterpret_cast<PyTypeObject*>(size);
  g_meta = reinterpret_cast<PyTypeObject*>(meta);
  Py_RETURN_NONE;
}

// start(): True when recording began; False when another RecordFunction user is active on this
// process (a profiler): switching RecordFunction off inside ops would hide ops from it.
PyObject* py_start(PyObject*, PyObject*) {
  if (S.active) Py_RETURN_FALSE;
  if (g_meta == nullptr) {
    PyErr_SetString(PyExc_RuntimeError, "configure() was not called");
    return nullptr;
  }
  if (at::hasCallbacks() || !at::isRecordFunctionEnabled()) Py_RETURN_FALSE;
  clear();
  // room reserved before the run (see the note at the top); kept for the next run
  if (S.tape.capacity() < (1u << 18)) S.tape.reserve(1u << 18);
  if (S.pending.capacity() < 64) S.pending.reserve(64);
  if (S.extras.capacity() < 256) S.extras.reserve(256);
  if (t_inputs.capacity() < 64) t_inputs.reserve(64);
  S.paused = 0;
  S.modules.assign(1, 0);
  S.owner = PyThread_get_thread_ident();
  S.owner_tid = std::this_thread::get_id();
  S.handle = at::addThreadLocalCallback(
      at::RecordFunctionCallback(on_enter, on_exit).needsInputs(true).needsOutputs(true).scopes(
          {at::RecordScope::FUNCTION}));
  S.active = true;
  Py_RETURN_TRUE;
}

PyObject* py_stop(PyObject*, PyObject*) {
  if (S.active) {
    at::removeCallback(S.handle);
    at::enableRecordFunction(true);
    S.active = false;
    S.open = false;
    S.pending.clear();
  }
  Py_RETURN_NONE;
}

// push(id): a module's forward begins; -1: one that is not a submodule of the model (its ops stay with the caller)
PyObject* py_push(PyObject*, PyObject* arg) {
  if (S.active && PyThread_get_thread_ident() == S.owner) {
    int id = static_cast<int>(PyLong_AsLong(arg));
    S.modules.push_back(id < 0 ? S.modules.back() : id);
  }
  Py_RETURN_NONE;
}

PyObject* py_pop(PyObject*, PyObject*) {
  if (S.active && PyThread_get_thread_ident() == S.owner && S.modules.size() > 1) S.modules.pop_back();
  Py_RETURN_NONE;
}

PyObject* py_pause(PyObject*, PyObject*) {
  S.paused++;
  Py_RETURN_NONE;
}

PyObject* py_resume(PyObject*, PyObject*) {
  if (S.paused > 0) S.paused--;
  Py_RETURN_NONE;
}

// the names of c10's Layout and MemoryFormat values, in enum order
PyObject* py_enum_names(PyObject*, PyObject*) {
  const int nl = static_cast<int>(c10::Layout::NumOptions);
  const int nm = static_cast<int>(c10::MemoryFormat::NumOptions);
  PyObject* layouts = PyList_New(nl);
  for (int i = 0; i < nl; i++) {
    std::ostringstream os;
    os << static_cast<c10::Layout>(i);
    PyList_SET_ITEM(layouts, i, PyUnicode_FromString(os.str().c_str()));
  }
  PyObject* memfmts = PyList_New(nm);
  for (int i = 0; i < nm; i++) {
    std::ostringstream os;
    os << static_cast<c10::MemoryFormat>(i);
    PyList_SET_ITEM(memfmts, i, PyUnicode_FromString(os.str().c_str()));
  }
  return Py_BuildValue("(NN)", layouts, memfmts);
}

PyObject* py_clear(PyObject*, PyObject*) {
  clear();
  Py_RETURN_NONE;
}

PyObject* py_position(PyObject*, PyObject*) { return PyLong_FromSize_t(S.nrecs); }

// the op table: id -> (name, overload name)
PyObject* py_ops(PyObject*, PyObject*) {
  PyObject* out = PyList_New(static_cast<Py_ssize_t>(S.ops.size()));
  for (size_t i = 0; i < S.ops.size(); i++) {
    const auto& name = S.ops[i]->schema->operator_name();
    PyList_SET_ITEM(out, i, Py_BuildValue("(ss)", name.name.c_str(), name.overload_name.c_str()));
  }
  return out;
}

// drain(plans, paths): every record made an OpEvent, as the Python capture's record_op makes it; the
// recorder is emptied. plans[op id] = (name, OpOverload, is_view, fresh, lifts); paths[module id] = path.
// Returns None (and forgets the records) when a record holds a value described only in Python.
PyObject* py_drain(PyObject*, PyObject* args) {
  PyObject *plans, *paths;
  if (!PyArg_ParseTuple(args, "O!O!", &PyList_Type, &plans, &PyList_Type, &paths)) return nullptr;
  if (S.unsupported || g_event == nullptr) {
    clear();
    Py_RETURN_NONE;
  }
  PyObject* out = PyList_New(static_cast<Py_ssize_t>(S.nrecs));
  if (out == nullptr) return nullptr;
  Reader rd(S.tape.data());
  PyObject* forward = PyUnicode_InternFromString("forward");
  PyObject* empty = PyTuple_New(0);
  bool failed = false;
  for (size_t r = 0; r < S.nrecs; r++) {
    int64_t op = *rd.p++;
    int64_t module = *rd.p++;
    int64_t npos = *rd.p++;
    int64_t nkw = *rd.p++;
    const int64_t* kws = rd.p;
    rd.p += nkw;
    int64_t nslots = *rd.p++;
    PyObject* plan = PyList_GET_ITEM(plans, op);
    const auto& schema_args = S.ops[op]->schema->arguments();
    PyObject* inputs = PyList_New(0);
    PyObject* args_t = PyTuple_New(static_cast<Py_ssize_t>(npos));
    PyObject* kwargs = PyDict_New();
    int64_t k = 0;
    for (int64_t i = 0; i < nslots; i++) {
      if (i < npos) {
        PyTuple_SET_ITEM(args_t, i, rd.value(inputs));
      } else if (k < nkw && kws[k] == i) {
        k++;
        const auto& name = schema_args[i].name();
        PyObject* v = rd.value(name == "out" ? nullptr : inputs);
        PyDict_SetItemString(kwargs, name.c_str(), v);
        Py_DECREF(v);
      } else {
        Py_DECREF(rd.value(nullptr));  // a skipped slot, or a defaulted keyword
      }
    }
    // outputs as the Python capture flattens them: a tensor; a list of tensors; a tuple of returns of
    // which at least one is a tensor, each tensor or list of tensors flattened
    int64_t nouts = *rd.p++;
    PyObject* outputs = PyList_New(0);
    PyObject* returned = PyList_New(0);
    bool any = nouts == 1;
    for (int64_t i = 0; i < nouts; i++) {
      bool tensor = *rd.p == T_TENSOR;
      any = any || tensor;
      PyObject* v = rd.value(returned);
      Py_DECREF(v);
    }
    if (any) {
      Py_DECREF(outputs);
      outputs = returned;
    } else {
      Py_DECREF(returned);
    }
    // the storages the op allocated, by its schema (see tracer._State.record_op)
    bool fresh = PyObject_IsTrue(PyTuple_GET_ITEM(plan, 3));
    bool lifts = PyObject_IsTrue(PyTuple_GET_ITEM(plan, 4));
    PyObject* created = PyList_New(0);
    Py_ssize_t nout = PyList_GET_SIZE(outputs), nin = PyList_GET_SIZE(inputs);
    if (fresh || lifts) {
      std::vector<Py_ssize_t> seen;
      if (fresh)
        for (Py_ssize_t i = 0; i < nin; i++) seen.push_back(PyLong_AsSsize_t(PyTuple_GET_ITEM(PyList_GET_ITEM(inputs, i), 3)));
      for (Py_ssize_t i = 0; i < nout; i++) {
        PyObject* t = PyList_GET_ITEM(outputs, i);
        Py_ssize_t key = PyLong_AsSsize_t(PyTuple_GET_ITEM(t, 3));
        if (fresh) {
          bool dup = false;
          for (auto x : seen) dup = dup || x == key;
          if (dup) continue;
          seen.push_back(key);
        }
        PyObject* pair = PyTuple_Pack(2, PyTuple_GET_ITEM(t, 3), PyTuple_GET_ITEM(t, 4));
        PyList_Append(created, pair);
        Py_DECREF(pair);
      }
    }
    PyObject* path = PyList_GET_ITEM(paths, module);
    PyObject* argv[12] = {PyLong_FromSize_t(r), PyTuple_GET_ITEM(plan, 0), path, forward, args_t, kwargs,
                          PyList_AsTuple(inputs), PyList_AsTuple(outputs), PyList_AsTuple(created), empty,
                          PyTuple_GET_ITEM(plan, 2), PyTuple_GET_ITEM(plan, 1)};
    PyObject* ev = PyObject_Vectorcall(reinterpret_cast<PyObject*>(g_event), argv, 12, nullptr);
    Py_DECREF(argv[0]);
    Py_DECREF(args_t);
    Py_DECREF(kwargs);
    Py_DECREF(argv[6]);
    Py_DECREF(argv[7]);
    Py_DECREF(argv[8]);
    Py_DECREF(inputs);
    Py_DECREF(outputs);
    Py_DECREF(created);
    if (ev == nullptr) {
      failed = true;
      break;
    }
    PyList_SET_ITEM(out, r, ev);
  }
  Py_DECREF(forward);
  Py_DECREF(empty);
  clear();
  if (failed) {
    Py_DECREF(out);
    return nullptr;
  }
  return out;
}

PyMethodDef methods[] = {
    {"configure", py_configure, METH_VARARGS, "hand over torch's dtype/layout/memory-format tables, torch.device, torch.Size and TensorMeta"},
    {"start", py_start, METH_NOARGS, "start recording this thread's ops; False if another RecordFunction user is active"},
    {"stop", py_stop, METH_NOARGS, "stop recording"},
    {"push", py_push, METH_O, "enter a module (its id)"},
    {"pop", py_pop, METH_NOARGS, "leave the current module"},
    {"pause", py_pause, METH_NOARGS, "record nothing until resume() (an op recorded as one fused event)"},
    {"resume", py_resume, METH_NOARGS, "undo one pause()"},
    {"enum_names", py_enum_names, METH_NOARGS, "the names of c10's Layout and MemoryFormat values, in order"},
    {"clear", py_clear, METH_NOARGS, "forget every record"},
    {"position", py_position, METH_NOARGS, "the number of ops recorded so far"},
    {"ops", py_ops, METH_NOARGS, "the op table: id -> (name, overload name)"},
    {"drain", py_drain, METH_VARARGS, "the records as OpEvents (None if one needs the Python capture); the recorder is emptied"},
    {nullptr, nullptr, 0, nullptr}};

PyModuleDef module_def = {PyModuleDef_HEAD_INIT, "_recorder", "modelmeter's native op recorder", -1, methods};

}  // namespace

PyMODINIT_FUNC PyInit__recorder(void) { return PyModule_Create(&module_def); }
