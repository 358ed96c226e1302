namespace Motr.Bench;

/// <summary>xorshift64* — a few cycles per number, no allocation; one per writer (a mutable struct: keep it in a field or local, never copy it).</summary>
internal struct XorShift64
{
    private ulong _s;

    public XorShift64(ulong seed) => _s = seed == 0 ? 0x9E3779B97F4A7C15UL : seed;

    /// <summary>A seed for stream <paramref name="n"/> that differs from its neighbours in every bit position.</summary>
    public static ulong SeedFor(long n) => ((ulong)n + 1) * 0x9E3779B97F4A7C15UL;

    public ulong Next()
    {
        ulong x = _s;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        _s = x;
        return x * 0x2545F4914F6CDD1DUL;
    }
}
