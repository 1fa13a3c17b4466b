/*
 * The Python zygote: a --preload library (libforkserver-python.so, loaded by
 * `forkserverd --python-preload MODULES`) that initializes an embedded CPython in each
 * zygote and imports forkserver.worker and the modules in $FORKSERVER_PYTHON_PRELOAD, once.
 * Its fork-mode entry runs the Pool's worker loop in a fresh fork: a Pool worker costs a
 * fork, not an interpreter start.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "client/forkserver.h"
#include "common/util.h"

#define EXPORT __attribute__((visibility("default")))

EXPORT int forkserver_preload_init(char *err, size_t errlen);
EXPORT int forkserver_python_worker(const struct forkserver_worker *w);

static PyObject *worker_main; /* forkserver.worker.main, looked up once */

/* The pending Python exception as text (its type and message), cleared. */
static void exception_text(char *buf, size_t len)
{
        PyObject *type, *value, *tb, *s = NULL;

        PyErr_Fetch(&type, &value, &tb);
        PyErr_NormalizeException(&type, &value, &tb);
        if (value)
                s = PyObject_Str(value);
        snprintf(buf, len, "%s: %s", type ? ((PyTypeObject *)type)->tp_name : "error",
                 s && PyUnicode_Check(s) ? PyUnicode_AsUTF8(s) : "?");
        Py_XDECREF(s);
        Py_XDECREF(type);
        Py_XDECREF(value);
        Py_XDECREF(tb);
}

static int import(const char *name, char *err, size_t errlen)
{
        int before = fs_count_dir("/proc/self/task");
        PyObject *m = PyImport_ImportModule(name);

        if (!m) {
                char why[256];

                exception_text(why, sizeof(why));
                snprintf(err, errlen, "--python-preload: cannot import %s (%s)", name, why);
                return -1;
        }
        Py_DECREF(m);
        if (fs_count_dir("/proc/self/task") != before) {
                snprintf(err, errlen,
                         "--python-preload: importing %s started a thread, and "
                         "fork-mode workers need a single-threaded zygote (for numpy and other "
                         "BLAS users, set OPENBLAS_NUM_THREADS=1, OMP_NUM_THREADS=1 and "
                         "MKL_NUM_THREADS=1 in forkserverd's environment)",
                         name);
                return -1;
        }
        return 0;
}

int forkserver_preload_init(char *err, size_t errlen)
{
        const char *list = getenv("FORKSERVER_PYTHON_PRELOAD");
        PyConfig config;
        PyStatus st;
        char copy[4096], *save;
        PyObject *r;
        Dl_info info;

        /* We were loaded RTLD_LOCAL; extension modules need libpython's symbols global. */
        if (!dladdr((void *)Py_InitializeFromConfig, &info) || !info.dli_fname ||
            !dlopen(info.dli_fname, RTLD_NOW | RTLD_GLOBAL | RTLD_NOLOAD)) {
                snprintf(err, errlen, "cannot make libpython's symbols global: %s", dlerror());
                return -1;
        }
        PyConfig_InitPythonConfig(&config);
        config.install_signal_handlers = 0; /* workers start from default dispositions */
        config.parse_argv = 0;
        st = Py_InitializeFromConfig(&config);
        PyConfig_Clear(&config);
        if (PyStatus_Exception(st)) {
                snprintf(err, errlen, "cannot initialize Python: %s",
                         st.err_msg ? st.err_msg : "?");
                return -1;
        }
        if (import("forkserver.worker", err, errlen) < 0)
                return -1;
        if (!(worker_main =
                  PyObject_GetAttrString(PyImport_AddModule("forkserver.worker"), "main"))) {
                exception_text(err, errlen);
                return -1;
        }
        snprintf(copy, sizeof(copy), "%s", list ? list : "");
        for (char *m = strtok_r(copy, ",", &save); m; m = strtok_r(NULL, ",", &save))
                if (*m && import(m, err, errlen) < 0)
                        return -1;
        /* The worker's loop runs once here (worker.warm), so that the bytecode it
         * specializes and the caches it fills are written in the zygote, not in every
         * worker. Everything imported so far lives as long as the zygote: out of the
         * collector's sight (gc.freeze), so that no collection in a worker touches, and so
         * copies, the zygote's pages. */
        if (!(r = PyObject_CallMethod(PyImport_AddModule("forkserver.worker"), "warm", NULL))) {
                exception_text(err, errlen);
                return -1;
        }
        Py_DECREF(r);
        if (PyRun_SimpleString("import gc; gc.collect(); gc.freeze()") != 0) {
                snprintf(err, errlen, "gc.freeze() failed");
                return -1;
        }
        return 0;
}

int forkserver_python_worker(const struct forkserver_worker *w)
{
        PyObject *r;
        long rc = 1;

        PyOS_AfterFork_Child();
        if (!(r = PyObject_CallFunction(worker_main, "i", w->channel_fd))) {
                PyErr_Print();
                return 1;
        }
        if (PyLong_Check(r))
                rc = PyLong_AsLong(r);
        Py_DECREF(r);
        return (int)rc; /* the zygote's child exits with it; no interpreter tear-down */
}
