select l_partkey, sum(l_quantity)
from lineitem
group by l_partkey
order by sum(l_quantity) desc, l_partkey
limit 100;
