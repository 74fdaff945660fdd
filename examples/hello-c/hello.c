#include <stdio.h>
#include <sys/utsname.h>

int main(void) {
    struct utsname u;
    uname(&u);
    printf("Hello from a static C binary built by strata (kernel %s)\n", u.sysname);
    return 0;
}
