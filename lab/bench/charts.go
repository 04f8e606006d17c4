package bench

import (
	"fmt"
	"math"
	"path/filepath"
	"slices"
	"strconv"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/plotutil"
	"gonum.org/v1/plot/vg"
)

// Chart files, in dir/bench.
const (
	ChartSetup    = "setup.png"
	ChartSetupCDF = "setup-cdf.png"
	ChartBursts   = "bursts.png"
	ChartDatapath = "datapath.png"
	ChartProfile  = "profile.png"
)

// WriteCharts draws the charts into dir.
func WriteCharts(r *Results, dir string) error {
	for _, c := range []struct {
		name string
		draw func(*Results) (*plot.Plot, error)
	}{
		{ChartSetup, setupChart}, {ChartSetupCDF, setupCDFChart}, {ChartBursts, burstChart},
		{ChartDatapath, datapathChart}, {ChartProfile, profileChart},
	} {
		p, err := c.draw(r)
		if err != nil {
			return fmt.Errorf("draw %s: %w", c.name, err)
		}
		p.Y.Tick.Marker = labelledTicks{}
		// Room above the data for the legend.
		p.Y.Min = 0
		p.Y.Max *= 1.3
		if err := p.Save(22*vg.Centimeter, 12*vg.Centimeter, filepath.Join(dir, c.name)); err != nil {
			return fmt.Errorf("save %s: %w", c.name, err)
		}
	}
	return nil
}

// labelledTicks labels every major tick, about six of them at round
// values (gonum's default ticker labels only a few).
type labelledTicks struct{}

func (labelledTicks) Ticks(min, max float64) []plot.Tick {
	if max <= min {
		return []plot.Tick{{Value: min, Label: fmt.Sprint(min)}}
	}
	raw := (max - min) / 6
	mag := math.Pow(10, math.Floor(math.Log10(raw)))
	step := mag
	for _, m := range []float64{1, 2, 2.5, 5, 10} {
		if m*mag >= raw {
			step = m * mag
			break
		}
	}
	var ticks []plot.Tick
	for v := math.Ceil(min/step) * step; v <= max+step/1e6; v += step {
		ticks = append(ticks, plot.Tick{Value: v, Label: strconv.FormatFloat(v, 'f', -1, 64)})
	}
	return ticks
}

// groupedBars adds one bar series per group, side by side at each x.
func groupedBars(p *plot.Plot, names []string, series [][]float64) error {
	w := vg.Points(60 / float64(max(1, len(series))))
	for i, vs := range series {
		bars, err := plotter.NewBarChart(plotter.Values(vs), w)
		if err != nil {
			return err
		}
		bars.LineStyle.Width = vg.Length(0)
		bars.Color = plotutil.Color(i)
		bars.Offset = w * vg.Length(float64(i)-float64(len(series)-1)/2)
		p.Add(bars)
		p.Legend.Add(names[i], bars)
	}
	p.Legend.Top = true
	p.Legend.Left = true
	p.Add(plotter.NewGrid())
	return nil
}

// clean replaces NaN (a measurement that did not happen) by zero, which
// plotter values reject otherwise.
func clean(v float64) float64 {
	if v != v {
		return 0
	}
	return v
}

func setupChart(r *Results) (*plot.Plot, error) {
	p := plot.New()
	p.Title.Text = fmt.Sprintf("Pod network setup through libcni, one pod at a time (%d pods)", r.Params.Pods)
	p.Y.Label.Text = "ms"
	labels := []string{"ADD p50", "ADD p90", "ADD p99", "DEL p50", "DEL p90", "DEL p99"}
	var names []string
	var series [][]float64
	for _, v := range Variants {
		s := r.setup(v)
		names = append(names, VariantTitle(v))
		series = append(series, []float64{clean(s.AddMS.P50), clean(s.AddMS.P90), clean(s.AddMS.P99),
			clean(s.DelMS.P50), clean(s.DelMS.P90), clean(s.DelMS.P99)})
	}
	if err := groupedBars(p, names, series); err != nil {
		return nil, err
	}
	p.NominalX(labels...)
	return p, nil
}

func setupCDFChart(r *Results) (*plot.Plot, error) {
	p := plot.New()
	p.Title.Text = "ADD latency distribution, one pod at a time"
	p.X.Label.Text = "ADD through libcni, ms"
	p.Y.Label.Text = "fraction of ADDs"
	var args []any
	for _, v := range Variants {
		s := slices.Clone(r.setup(v).AddSamplesMS)
		slices.Sort(s)
		pts := make(plotter.XYs, len(s))
		for i, x := range s {
			pts[i] = plotter.XY{X: x, Y: float64(i+1) / float64(len(s))}
		}
		if len(pts) > 0 {
			args = append(args, VariantTitle(v), pts)
		}
	}
	if err := plotutil.AddLines(p, args...); err != nil {
		return nil, err
	}
	p.Legend.Top = false
	p.Legend.Left = false
	p.Add(plotter.NewGrid())
	return p, nil
}

func burstChart(r *Results) (*plot.Plot, error) {
	p := plot.New()
	p.Title.Text = "Burst: N pods ADDed at once on one VM, time until all are ready"
	p.X.Label.Text = "pods in the burst"
	p.Y.Label.Text = "s (median of rounds)"
	var args []any
	for _, v := range Variants {
		var pts plotter.XYs
		for _, n := range r.Params.Bursts {
			b := r.burst(v, n)
			if len(b.Rounds) > 0 {
				pts = append(pts, plotter.XY{X: float64(n), Y: b.AddWallMS.P50 / 1000})
			}
		}
		if len(pts) > 0 {
			args = append(args, VariantTitle(v), pts)
		}
	}
	if err := plotutil.AddLinePoints(p, args...); err != nil {
		return nil, err
	}
	if n := r.largestBurst(); n > 0 {
		target, err := plotter.NewLine(plotter.XYs{{X: 0, Y: targetBurstMS / 1000}, {X: float64(n), Y: targetBurstMS / 1000}})
		if err != nil {
			return nil, err
		}
		target.Dashes = []vg.Length{vg.Points(4), vg.Points(4)}
		p.Add(target)
		p.Legend.Add(fmt.Sprintf("target for %d pods", targetBurstSize), target)
	}
	p.Legend.Top = true
	p.Legend.Left = true
	p.Add(plotter.NewGrid())
	return p, nil
}

func datapathChart(r *Results) (*plot.Plot, error) {
	p := plot.New()
	p.Title.Text = "TCP throughput over the lab fabric (iperf3, median of rounds)"
	p.Y.Label.Text = "Gbit/s"
	if len(r.Datapath) == 0 {
		return p, nil
	}
	var labels []string
	one, four := []float64{}, []float64{}
	for _, x := range r.Datapath {
		labels = append(labels, shortPath(x))
		one = append(one, clean(med(x.Gbps1)))
		four = append(four, clean(med(x.Gbps4)))
	}
	if err := groupedBars(p, []string{"1 stream", "4 streams"}, [][]float64{one, four}); err != nil {
		return nil, err
	}
	p.NominalX(labels...)
	p.X.Tick.Label.Font.Size = vg.Points(8)
	return p, nil
}

func shortPath(x *Path) string {
	var m string
	switch x.Mode {
	case ModeRaw:
		return "VM-VM\nno CNI"
	case VariantBridge:
		m = "bridge"
	case VariantTransparent:
		m = "transp."
	}
	switch x.Kind {
	case KindVMVM:
		return m + "\nVM-VM"
	case KindPodPodCross:
		return m + "\npod-pod x-VM"
	case KindPodPodLocal:
		return m + "\npod-pod 1 VM"
	}
	return m
}

func profileChart(r *Results) (*plot.Plot, error) {
	p := plot.New()
	p.Title.Text = "Where an azure-vnet call spends its time, one pod at a time (p50 per phase)"
	p.Y.Label.Text = "ms"
	var ps []Profile
	for _, x := range r.Profiles {
		if x.Source == "sequential" {
			ps = append(ps, x)
		}
	}
	var phases []string
	for _, x := range ps {
		for _, ph := range x.Phases {
			if ph.Name != phaseTotal && !slices.Contains(phases, ph.Name) {
				phases = append(phases, ph.Name)
			}
		}
	}
	var names []string
	var series [][]float64
	for _, x := range ps {
		names = append(names, fmt.Sprintf("%s %s", VariantTitle(x.Variant), x.Command))
		vs := make([]float64, len(phases))
		for _, ph := range x.Phases {
			if i := slices.Index(phases, ph.Name); i >= 0 {
				vs[i] = clean(ph.P50)
			}
		}
		series = append(series, vs)
	}
	if len(series) == 0 {
		return p, nil
	}
	if err := groupedBars(p, names, series); err != nil {
		return nil, err
	}
	p.NominalX(phases...)
	return p, nil
}
