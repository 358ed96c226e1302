using System.Runtime.InteropServices;

namespace Motr.Bench;

/// <summary>What the numbers were measured on: printed above every table and stored with every JSON row.</summary>
internal sealed record MachineInfo(string Cpu, int Cores, long RamBytes, string Os, string Dotnet, string FileSystem)
{
    /// <summary>Reads the machine's description; <paramref name="benchDir"/> is where the bench's files live.</summary>
    public static MachineInfo Collect(string benchDir) => new(
        CpuModel(),
        Environment.ProcessorCount,
        MemTotal(),
        OsName(),
        RuntimeInformation.FrameworkDescription,
        FileSystemOf(benchDir));

    public override string ToString() =>
        $"{Cpu}, {Cores} cores, {RamBytes / (double)(1L << 30):F1} GiB RAM, {Os}, {Dotnet}, bench dir on {FileSystem}";

    private static string CpuModel()
    {
        foreach (var line in ReadLines("/proc/cpuinfo"))
            if (line.StartsWith("model name", StringComparison.Ordinal) && line.IndexOf(':') is int c and > 0)
                return line[(c + 1)..].Trim();
        return RuntimeInformation.ProcessArchitecture.ToString();
    }

    private static long MemTotal()
    {
        foreach (var line in ReadLines("/proc/meminfo"))
            if (line.StartsWith("MemTotal:", StringComparison.Ordinal)
                && long.TryParse(line["MemTotal:".Length..].Trim().Split(' ')[0], out long kib))
                return kib * 1024;
        return GC.GetGCMemoryInfo().TotalAvailableMemoryBytes;
    }

    private static string OsName()
    {
        string name = RuntimeInformation.OSDescription;
        foreach (var line in ReadLines("/etc/os-release"))
            if (line.StartsWith("PRETTY_NAME=", StringComparison.Ordinal))
                name = line["PRETTY_NAME=".Length..].Trim('"');
        string kernel = ReadText("/proc/sys/kernel/osrelease").Trim();
        return kernel.Length > 0 ? $"{name} (kernel {kernel})" : name;
    }

    /// <summary>File system type, device and mount point holding <paramref name="path"/>, from /proc/self/mountinfo.</summary>
    private static string FileSystemOf(string path)
    {
        string full = Path.GetFullPath(path);
        string best = "unknown";
        int bestLength = -1;
        foreach (var line in ReadLines("/proc/self/mountinfo"))
        {
            // id parent major:minor root mount-point options [optional...] - fstype source super-options
            var f = line.Split(' ');
            int dash = Array.IndexOf(f, "-");
            if (f.Length < 5 || dash < 0 || dash + 2 >= f.Length) continue;
            string mount = f[4].Replace("\\040", " ", StringComparison.Ordinal);
            bool under = full == mount || mount == "/" || full.StartsWith(mount + "/", StringComparison.Ordinal);
            if (under && mount.Length >= bestLength)
            {
                bestLength = mount.Length;
                best = $"{f[dash + 1]} ({f[dash + 2]} at {mount})";
            }
        }
        return best;
    }

    private static IEnumerable<string> ReadLines(string file) => File.Exists(file) ? File.ReadLines(file) : [];

    private static string ReadText(string file) => File.Exists(file) ? File.ReadAllText(file) : "";
}
