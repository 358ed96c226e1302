using System.Diagnostics;
using System.Reflection;

namespace Motr.Bench;

/// <summary>
/// What a run measured, for its JSON: the code (the commit the harness was built from, and whether the
/// working tree it ran in had uncommitted changes), when, the command line, and the settings in effect
/// (each command's defaults filled in: <see cref="BenchOptions.Settings"/>).
/// </summary>
internal sealed record RunInfo(string CommandLine, string? Commit, bool? SourceDirty, DateTimeOffset Started, IReadOnlyDictionary<string, object> Settings)
{
    private static readonly DateTimeOffset StartedAt = DateTimeOffset.UtcNow;

    public static RunInfo Collect(string[] args, BenchOptions o) =>
        new("Motr.Bench " + string.Join(' ', args), BuildCommit(), WorkingTreeDirty(), StartedAt, o.Settings);

    /// <summary>The commit the SDK stamped into the informational version at build ("1.0.0+&lt;sha&gt;"), if any.</summary>
    private static string? BuildCommit()
    {
        string? v = typeof(RunInfo).Assembly.GetCustomAttribute<AssemblyInformationalVersionAttribute>()?.InformationalVersion;
        int plus = v?.IndexOf('+') ?? -1;
        return plus >= 0 ? v![(plus + 1)..] : null;
    }

    /// <summary>Whether the git working tree of the current folder has uncommitted changes to tracked files (null: no git, or not in a repository).</summary>
    private static bool? WorkingTreeDirty()
    {
        try
        {
            var psi = new ProcessStartInfo("git", ["status", "--porcelain", "--untracked-files=no"])
            {
                RedirectStandardOutput = true,
                RedirectStandardError = true,
                UseShellExecute = false,
            };
            using var p = Process.Start(psi);
            if (p is null) return null;
            string output = p.StandardOutput.ReadToEnd();
            p.StandardError.ReadToEnd();
            if (!p.WaitForExit(10_000) || p.ExitCode != 0) return null;
            return output.Trim().Length > 0;
        }
        catch (Exception e) when (e is System.ComponentModel.Win32Exception or InvalidOperationException or IOException)
        {
            return null;
        }
    }
}
