namespace Motr.Crash.Tests;

/// <summary>The seed of a crash test: MOTR_CRASH_SEED when set (to rerun a failure or try another), else the test's own.</summary>
internal static class CrashSeed
{
    public static int Or(int fallback) =>
        int.TryParse(Environment.GetEnvironmentVariable("MOTR_CRASH_SEED"), out int s) ? s : fallback;
}
