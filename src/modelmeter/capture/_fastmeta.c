/* The capture's hottest call, TensorMeta.of(tensor), in C.
 *
 * A capture builds a TensorMeta for every tensor every aten op reads or writes: ten reads of the
 * tensor (shape, dtype, device flags, its storage's identity and size, requires_grad, numel, nbytes).
 * In Python each read is a bytecode attribute lookup; between two kernels, with the caches
 * overwritten by the kernel before, that costs about three times what it costs in a tight loop
 * (docs/benchmarks.md, "Why trimming stopped paying"). This module does the same reads through the
 * C API, with the attribute names interned once, and builds the named tuple directly.
 *
 * Only the public Python C API is used (no PyTorch headers, so no build against a torch version):
 * the tensor is read exactly as the Python implementation reads it, and a test checks that both
 * give equal TensorMetas for CPU and meta tensors, views, empty tensors and every dtype. The package
 * falls back to the Python implementation when this module was not built (it is optional at
 * install) or when MODELMETER_PURE_PYTHON is set.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

static PyTypeObject *meta_type = NULL; /* modelmeter.capture.events.TensorMeta */

static PyObject *s_shape, *s_dtype, *s_is_cpu, *s_is_meta, *s_device, *s_type, *s_untyped_storage,
    *s_cdata, *s_nbytes, *s_requires_grad, *s_numel, *s_itemsize, *str_cpu, *str_meta;

#define N_FIELDS 8 /* shape, dtype, device, storage_key, storage_nbytes, requires_grad, numel, nbytes */

static PyObject *
set_type(PyObject *self, PyObject *cls)
{
    if (!PyType_Check(cls) || !PyType_IsSubtype((PyTypeObject *)cls, &PyTuple_Type)) {
        PyErr_SetString(PyExc_TypeError, "set_type expects a tuple subclass (TensorMeta)");
        return NULL;
    }
    Py_INCREF(cls);
    Py_XSETREF(meta_type, (PyTypeObject *)cls);
    Py_RETURN_NONE;
}

/* 1 if obj.<name> is true, 0 if false, -1 on error */
static int
flag(PyObject *obj, PyObject *name)
{
    PyObject *v = PyObject_GetAttr(obj, name);
    if (v == NULL)
        return -1;
    int r = PyObject_IsTrue(v);
    Py_DECREF(v);
    return r;
}

static PyObject *
device_type(PyObject *t)
{
    int r = flag(t, s_is_cpu);
    if (r < 0)
        return NULL;
    if (r) {
        Py_INCREF(str_cpu);
        return str_cpu;
    }
    r = flag(t, s_is_meta);
    if (r < 0)
        return NULL;
    if (r) {
        Py_INCREF(str_meta);
        return str_meta;
    }
    PyObject *dev = PyObject_GetAttr(t, s_device);
    if (dev == NULL)
        return NULL;
    PyObject *ty = PyObject_GetAttr(dev, s_type);
    Py_DECREF(dev);
    return ty;
}

/* dtype.itemsize, remembered per dtype object (torch's dtypes are a few long-lived singletons) */
#define N_DTYPES 64
static PyObject *dtype_keys[N_DTYPES];
static long long dtype_sizes[N_DTYPES];
static int n_dtypes = 0;

static long long
item_size(PyObject *dtype)
{
    for (int i = 0; i < n_dtypes; i++)
        if (dtype_keys[i] == dtype)
            return dtype_sizes[i];
    PyObject *v = PyObject_GetAttr(dtype, s_itemsize);
    if (v == NULL)
        return -1;
    long long size = PyLong_AsLongLong(v);
    Py_DECREF(v);
    if (size < 0)
        return -1;
    if (n_dtypes < N_DTYPES) {
        Py_INCREF(dtype); /* kept: the pointer must never be reused by another object */
        dtype_keys[n_dtypes] = dtype;
        dtype_sizes[n_dtypes] = size;
        n_dtypes++;
    }
    return size;
}

static PyObject *
meta_of(PyObject *self, PyObject *t)
{
    if (meta_type == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "_fastmeta.set_type(TensorMeta) was not called");
        return NULL;
    }
    PyObject *items[N_FIELDS] = {NULL};
    PyObject *st = NULL;
    if ((items[0] = PyObject_GetAttr(t, s_shape)) == NULL)
        goto fail;
    if ((items[1] = PyObject_GetAttr(t, s_dtype)) == NULL)
        goto fail;
    if ((items[2] = device_type(t)) == NULL)
        goto fail;
    if ((st = PyObject_CallMethodNoArgs(t, s_untyped_storage)) == NULL)
        goto fail;
    if ((items[3] = PyObject_GetAttr(st, s_cdata)) == NULL)
        goto fail;
    if ((items[4] = PyObject_CallMethodNoArgs(st, s_nbytes)) == NULL)
        goto fail;
    Py_CLEAR(st);
    if ((items[5] = PyObject_GetAttr(t, s_requires_grad)) == NULL)
        goto fail;
    /* numel and nbytes from the shape and the dtype's item size, as TensorImpl computes them; a
     * shape that is not all Python ints (symbolic sizes) asks the tensor */
    long long numel = 1;
    int exact = PyTuple_Check(items[0]);
    for (Py_ssize_t i = 0; exact && i < PyTuple_GET_SIZE(items[0]); i++) {
        PyObject *d = PyTuple_GET_ITEM(items[0], i);
        if (!PyLong_CheckExact(d)) {
            exact = 0;
            break;
        }
        long long v = PyLong_AsLongLong(d);
        if (v < 0 && PyErr_Occurred()) {
            PyErr_Clear();
            exact = 0;
            break;
        }
        numel *= v;
    }
    long long itemsize = exact ? item_size(items[1]) : -1;
    if (itemsize < 0) {
        if (PyErr_Occurred())
            goto fail;
        if ((items[6] = PyObject_CallMethodNoArgs(t, s_numel)) == NULL)
            goto fail;
        if ((items[7] = PyObject_GetAttr(t, s_nbytes)) == NULL)
            goto fail;
    }
    else {
        if ((items[6] = PyLong_FromLongLong(numel)) == NULL)
            goto fail;
        if ((items[7] = PyLong_FromLongLong(numel * itemsize)) == NULL)
            goto fail;
    }
    /* what tuple.__new__(TensorMeta, items) does: allocate the subclass instance, fill its slots */
    PyObject *res = meta_type->tp_alloc(meta_type, N_FIELDS);
    if (res == NULL)
        goto fail;
    for (Py_ssize_t i = 0; i < N_FIELDS; i++)
        PyTuple_SET_ITEM(res, i, items[i]); /* steals the reference */
    return res;
fail:
    Py_XDECREF(st);
    for (Py_ssize_t i = 0; i < N_FIELDS; i++)
        Py_XDECREF(items[i]);
    return NULL;
}

static PyMethodDef methods[] = {
    {"set_type", set_type, METH_O, "Set the TensorMeta class meta_of builds (once, at import)."},
    {"meta_of", meta_of, METH_O, "TensorMeta.of(tensor), in C."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef moduledef = {
    PyModuleDef_HEAD_INIT, "_fastmeta", "TensorMeta.of in C (optional; see events.py).", -1, methods,
};

PyMODINIT_FUNC
PyInit__fastmeta(void)
{
#define INTERN(var, text)                                    \
    if ((var = PyUnicode_InternFromString(text)) == NULL) \
        return NULL;
    INTERN(s_shape, "shape");
    INTERN(s_dtype, "dtype");
    INTERN(s_is_cpu, "is_cpu");
    INTERN(s_is_meta, "is_meta");
    INTERN(s_device, "device");
    INTERN(s_type, "type");
    INTERN(s_untyped_storage, "untyped_storage");
    INTERN(s_cdata, "_cdata");
    INTERN(s_nbytes, "nbytes");
    INTERN(s_requires_grad, "requires_grad");
    INTERN(s_numel, "numel");
    INTERN(s_itemsize, "itemsize");
    INTERN(str_cpu, "cpu");
    INTERN(str_meta, "meta");
#undef INTERN
    return PyModule_Create(&moduledef);
}
