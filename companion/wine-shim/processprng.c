/*
 * bcryptprimitives.dll for Wine 8.0, which has no such DLL: Rust's standard library on
 * x86_64-pc-windows-gnu imports bcryptprimitives!ProcessPrng, so without this shim next to the
 * .exe the loader refuses to start it. ProcessPrng is documented to fill the buffer and always
 * return TRUE; here it is served by advapi32's RtlGenRandom (exported as SystemFunction036),
 * which takes a ULONG length, hence the chunking.
 *
 * Built by companion/tests/wine_lane.rs with:
 *   x86_64-w64-mingw32-gcc -shared -O2 -o bcryptprimitives.dll processprng.c -ladvapi32
 */
#include <windows.h>

BOOLEAN WINAPI SystemFunction036(PVOID buffer, ULONG length);

__declspec(dllexport) BOOL WINAPI ProcessPrng(PBYTE data, SIZE_T length)
{
    const SIZE_T max_chunk = 0x40000000;

    while (length > 0)
    {
        ULONG chunk = (ULONG)(length < max_chunk ? length : max_chunk);
        if (!SystemFunction036(data, chunk))
            return FALSE;
        data += chunk;
        length -= chunk;
    }
    return TRUE;
}
