select extract(year from l_shipdate) as l_year, sum(l_extendedprice), sum(l_discount), sum(l_tax), sum(l_quantity)
from lineitem
group by extract(year from l_shipdate);
