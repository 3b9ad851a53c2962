package main

import (
	"fmt"
	"image"
	"image/color"
	"image/draw"
	"image/png"
	"io"
	"math"
	"slices"
	"strings"

	"golang.org/x/image/font"
	"golang.org/x/image/font/basicfont"
	"golang.org/x/image/math/fixed"
)

// The chart's size and margins, in pixels.
const (
	width, height = 720, 420
	left, right   = 70, 20
	top, bottom   = 50, 60
)

// palette returns the bar colour of the i-th mode.
func palette(i int) color.RGBA {
	colors := [...]color.RGBA{{0x1f, 0x77, 0xb4, 0xff}, {0xff, 0x7f, 0x0e, 0xff}, {0x2c, 0xa0, 0x2c, 0xff}, {0xd6, 0x27, 0x28, 0xff}}
	return colors[i%len(colors)]
}

// chart draws on an image.
type chart struct {
	img  *image.RGBA
	face font.Face
	// lo and hi are the decades (powers of ten, in µs) the y axis spans.
	lo, hi float64
}

// Draw writes a PNG bar chart of figs: per cluster size one bar per mode,
// as tall as the p50 connect time on a logarithmic axis, with a whisker up
// to the p99.
func Draw(w io.Writer, figs []Figure) error {
	var modes []string
	var sizes []int
	lo, hi := math.Inf(1), math.Inf(-1)
	for _, f := range figs {
		if !slices.Contains(modes, f.Mode) {
			modes = append(modes, f.Mode)
		}
		if !slices.Contains(sizes, f.Services) {
			sizes = append(sizes, f.Services)
		}
		lo, hi = math.Min(lo, math.Min(f.P50, f.P99)), math.Max(hi, math.Max(f.P50, f.P99))
	}
	if !(lo > 0) {
		return fmt.Errorf("plot: connect times must be positive, the smallest is %v µs", lo)
	}
	slices.Sort(sizes)
	c := &chart{
		img:  image.NewRGBA(image.Rect(0, 0, width, height)),
		face: basicfont.Face7x13,
		lo:   math.Floor(math.Log10(lo)),
		hi:   math.Ceil(math.Log10(hi)),
	}
	if c.hi == c.lo {
		c.hi++
	}
	draw.Draw(c.img, c.img.Bounds(), image.White, image.Point{}, draw.Src)
	c.text(left, 20, "First-packet latency: new TCP connection to the last service (bars p50, whiskers p99)", color.Black)
	c.text(8, top-12, "connect time, log scale", color.Black)
	c.axes()
	groupW := float64(width-left-right) / float64(len(sizes))
	barW := int(groupW * 0.7 / float64(len(modes)))
	for gi, n := range sizes {
		x0 := left + int(groupW*float64(gi)+groupW*0.15)
		label := groupDigits(n) + " services"
		c.text(left+int(groupW*(float64(gi)+0.5))-len(label)*7/2, height-bottom+18, label, color.Black)
		for mi, m := range modes {
			for _, f := range figs {
				if f.Mode == m && f.Services == n {
					c.bar(x0+mi*barW, barW-4, f, palette(mi))
				}
			}
		}
	}
	for mi, m := range modes {
		x := left + 10 + mi*120
		c.fill(image.Rect(x, height-22, x+12, height-10), palette(mi))
		c.text(x+18, height-11, m, color.Black)
	}
	if err := png.Encode(w, c.img); err != nil {
		return fmt.Errorf("encode PNG: %w", err)
	}
	return nil
}

// y returns the row of value v (µs) on the logarithmic axis.
func (c *chart) y(v float64) int {
	frac := (math.Log10(v) - c.lo) / (c.hi - c.lo)
	return height - bottom - int(frac*float64(height-top-bottom))
}

// axes draws the y axis with a grid line and label per decade and its
// halves, and the x axis.
func (c *chart) axes() {
	grey := color.RGBA{0xdd, 0xdd, 0xdd, 0xff}
	for d := c.lo; d <= c.hi; d++ {
		for _, m := range []float64{1, 2, 5} {
			v := m * math.Pow(10, d)
			if math.Log10(v) > c.hi+1e-9 {
				break
			}
			y := c.y(v)
			c.fill(image.Rect(left, y, width-right, y+1), grey)
			label := fmt.Sprintf("%g us", v)
			c.text(left-8-len([]rune(label))*7, y+4, label, color.Black)
		}
	}
	c.fill(image.Rect(left, top, left+1, height-bottom), color.Black)
	c.fill(image.Rect(left, height-bottom, width-right, height-bottom+1), color.Black)
}

// bar draws one figure's bar, whisker and value.
func (c *chart) bar(x, w int, f Figure, col color.RGBA) {
	y50, y99 := c.y(f.P50), c.y(f.P99)
	c.fill(image.Rect(x, y50, x+w, height-bottom), col)
	mid := x + w/2
	c.fill(image.Rect(mid, y99, mid+1, y50), color.Black)
	c.fill(image.Rect(mid-w/4, y99, mid+w/4+1, y99+1), color.Black)
	// The p50 goes inside the bar's top, in white, where the bar is tall
	// enough, else in black above it.
	label := strings.ReplaceAll(micro(f.P50), "µ", "u") // basicfont has no µ
	x0 := x + (w-len([]rune(label))*7)/2
	if height-bottom-y50 >= 20 {
		c.fill(image.Rect(x0-2, y50+3, x0+len([]rune(label))*7+2, y50+17), col)
		c.text(x0, y50+14, label, color.White)
	} else {
		c.text(x0, y50-4, label, color.Black)
	}
}

// fill paints r in col.
func (c *chart) fill(r image.Rectangle, col color.Color) {
	draw.Draw(c.img, r, image.NewUniform(col), image.Point{}, draw.Src)
}

// text writes s with its baseline at (x, y).
func (c *chart) text(x, y int, s string, col color.Color) {
	d := font.Drawer{Dst: c.img, Src: image.NewUniform(col), Face: c.face, Dot: fixed.P(x, y)}
	d.DrawString(s)
}
