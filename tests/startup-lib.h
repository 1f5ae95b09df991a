/* startup-lib.c: a value its constructor sets. */
#ifndef STARTUP_LIB_H
#define STARTUP_LIB_H

#ifdef __cplusplus
extern "C" {
#endif

#define STARTUP_LIB_VALUE 5678

__attribute__((visibility("default"))) int startup_lib_value(void);

#ifdef __cplusplus
}
#endif

#endif
