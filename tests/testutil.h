/* Helpers shared by the Check suites. */
#pragma once

#include <check.h>
#include <stdio.h>
#include <stdlib.h>

#include "common/util.h"

/* Open fds of this process (excluding the one the count itself opens). */
static inline int count_fds(void)
{
        int n = fs_count_dir("/proc/self/fd");

        return n < 0 ? n : n - 1;
}

static inline int run_suite(Suite *s)
{
        SRunner *sr = srunner_create(s);
        int failed;

        srunner_run_all(sr, CK_NORMAL);
        failed = srunner_ntests_failed(sr);
        srunner_free(sr);
        return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}

/* How much slower than plain this build's daemon runs (FORKSERVER_TEST_SLOWDOWN, set for the
 * sanitizers' run): bounds on time are multiplied by it. */
static inline long slowdown(void)
{
        const char *v = getenv("FORKSERVER_TEST_SLOWDOWN");
        long n = v ? strtol(v, NULL, 10) : 1;

        return n >= 1 && n <= 100 ? n : 1;
}
